"""Evaluation: the published protocol (:mod:`~cdvd.evaluation.protocol`), PSNR/SSIM (:mod:`~cdvd.evaluation.metrics`),
scoring of frame folders (:mod:`~cdvd.evaluation.scoring`) and labelled picture strips
(:mod:`~cdvd.evaluation.pictures`).
"""
