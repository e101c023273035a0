"""Training: the run (:mod:`~cdvd.training.run`), the LightningModule (:mod:`~cdvd.training.module`), its callbacks,
resume, the learning-rate finder, experiment tracking, sweeps and the checks of a composed training config.

Nothing is imported here: each tool imports what it uses.
"""
