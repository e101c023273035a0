"""Training: the LightningModule, the composed configs, resume, multirun, DDP on CPU and the LR range test."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers.cli import compose_config, compose_train, console_script, run_command, smoke_cli_args

import cdvd
from cdvd.errors import ConfigError
from cdvd.models import CDVDTSP
from cdvd.training.module import DeblurModule, build_param_groups
from cdvd.training.run import build, check_config, train


def _tiny_module(lr: float = 1e-3, **kwargs) -> DeblurModule:
    torch.manual_seed(0)
    net = {"_target_": "cdvd.models.CDVDTSP", "n_feat": 4, "n_resblock": 1}
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr}
    return DeblurModule(net, {"_target_": "cdvd.losses.L1HEMLoss"}, optimizer, **kwargs)


@pytest.mark.slow
def test_training_steps_change_weights_and_lower_the_loss() -> None:
    module = _tiny_module()
    optimizer = module.configure_optimizers()
    torch.manual_seed(1)
    # a static scene: every frame of the clip shows the same sharp image, which the net can learn to recover
    sharp = torch.rand(1, 1, 3, 16, 16).expand(1, 5, 3, 16, 16).contiguous()
    batch = {"blur": (sharp + 0.1 * torch.randn_like(sharp)).clamp(0, 1), "sharp": sharp}
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    losses = []
    for _ in range(20):  # below 0.7 of the first loss from step 9 on: 0.65 at step 20 (0.62 at 30)
        optimizer.zero_grad()
        loss = module.compute_loss(batch)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    changed = [k for k, v in module.net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("recons.") for k in changed)
    assert any(k.startswith("flow.") for k in changed), "the flow net trains too"


def test_param_groups_cover_every_parameter_once_with_flow_ratio() -> None:
    net = CDVDTSP(n_feat=4, n_resblock=1)
    groups = build_param_groups(net, 1e-4, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert groups[1]["lr"] == pytest.approx(1e-5)


def test_onecycle_gets_total_steps_and_keeps_group_ratio() -> None:
    onecycle = {
        "_target_": "torch.optim.lr_scheduler.OneCycleLR",
        "_partial_": True,
        "max_lr": 1e-3,
        "div_factor": None,
    }
    module = _tiny_module(lr=1e-4, flow_lr_scale=0.5, scheduler={"scheduler": onecycle, "interval": "epoch"})

    class _Trainer:
        estimated_stepping_batches = 40

    module._trainer = _Trainer()  # configure_optimizers only reads estimated_stepping_batches
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert scheduler.total_steps == 40
    first, flow = config["optimizer"].param_groups
    # starts at the optimiser's lr (div_factor = max_lr / lr) and peaks at max_lr, the flow group at half
    assert first["lr"] == pytest.approx(1e-4)
    assert flow["lr"] == pytest.approx(0.5e-4)
    assert first["max_lr"] == pytest.approx(1e-3)
    assert flow["max_lr"] == pytest.approx(0.5e-3)


def test_msssim_loss_with_small_patches_is_a_config_error(smoke_overrides: list[str]) -> None:
    cfg = compose_train([*smoke_overrides, "loss=msssim_l1", "data.patch_size=128"])
    with pytest.raises(ConfigError, match="161"):
        check_config(cfg)
    check_config(compose_train([*smoke_overrides, "loss=msssim_l1", "data.patch_size=192"]))
    # the schema reads the patch size before the loss's rule does (was int()'s "invalid literal" message)
    with pytest.raises(ConfigError, match="data.patch_size=abc: not a whole number"):
        check_config(compose_train([*smoke_overrides, "loss=msssim_l1", "data.patch_size=abc"]))


def test_missing_resume_checkpoint_is_a_config_error(smoke_overrides: list[str], tmp_path: Path) -> None:
    cfg = compose_train([*smoke_overrides, f"ckpt_path={tmp_path / 'nope.ckpt'}"])
    with pytest.raises(ConfigError, match="nope.ckpt"):
        check_config(cfg)


def test_the_trainer_keeps_its_start_up_lines_but_not_adverts(
    smoke_overrides: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        build(compose_train(smoke_overrides))
    assert "GPU available" in caplog.text  # Lightning's own facts about the run stay
    assert "litlogger" not in caplog.text


def test_every_experiment_composes() -> None:
    for name in ("smoke", "paper_dvd", "paper_gopro", "fork2021_dvd", "demo"):
        cfg = compose_train([f"experiment={name}", "data.root=/somewhere"])
        assert cfg.model.net._target_ == "cdvd.models.CDVDTSP"
    paper = compose_train(["experiment=paper_dvd", "data.root=/d"])
    assert paper.loss._target_ == "cdvd.losses.L1HEMLoss"
    assert paper.optimizer.lr == 1e-4 and paper.scheduler.scheduler.step_size == 200
    assert paper.data.batch_size == 8 and paper.data.patch_size == 256
    fork = compose_train(["experiment=fork2021_dvd", "data.root=/d"])
    assert fork.loss._target_ == "cdvd.losses.MSSSIML1Loss"
    assert fork.optimizer._target_ == "torch.optim.AdamW"
    assert "OneCycleLR" in fork.scheduler.scheduler._target_


def test_smoke_experiment_trains_and_writes_a_loadable_checkpoint(
    smoke_overrides: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_train([*smoke_overrides, "logger=csv"])
    with caplog.at_level(logging.INFO, logger="cdvd.training.run"):
        metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["val/psnr"]))
    # the run says how it compares with its blurry input, and why when it is below it
    verdict = [r.getMessage() for r in caplog.records if "of the blurry input" in r.getMessage()]
    assert len(verdict) == 1 and f"{metrics['val/psnr']:.2f} dB against {metrics['val/psnr_input']:.2f}" in verdict[0]
    assert ("below the input" in verdict[0]) == (metrics["val/psnr"] < metrics["val/psnr_input"])
    assert metrics["val/psnr"] > metrics["val/psnr_input"] - 3  # residual: near its input, not a random net's 6 dB
    assert metrics["val/psnr_best"] >= metrics["val/psnr"] - 1e-6
    for key in ("train/loss_epoch", "train/l1_epoch", "train/hem_epoch", "val/ssim", "val/psnr_stage1"):
        assert key in metrics, sorted(metrics)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file()
    model = cdvd.load_model(last)
    assert (model.n_feat, model.n_resblock) == (8, 1)
    trained = objects["model"].net.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    exported = list((tmp_path / "checkpoints").glob("*.pt"))
    assert exported, "best weights exported in the original format"
    assert any(k.startswith("recons_net.") for k in torch.load(exported[0], weights_only=True))
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def _eval_config(overrides: list[str]):  # noqa: ANN202 - DictConfig
    return compose_config("eval", [*overrides, "device=cpu", "progress=false"])


def test_validation_scores_agree_with_cdvd_eval(smoke_overrides: list[str], tiny_dataset: Path, tmp_path: Path) -> None:
    """The PSNR/SSIM that validation logs are what cdvd-eval reports on the same frames and checkpoint."""
    from cdvd.cli.evaluate import run_eval

    cfg = compose_train(
        [
            *smoke_overrides,
            "logger=csv",
            "trainer.max_epochs=1",
            "data.val_n_frames_per_video=null",
            "callbacks.save_images.enabled=true",
        ]
    )
    metrics, _ = train(cfg)
    saved = tmp_path / "val_images" / "epoch_0000"
    gt = tiny_dataset / "val" / "gt"
    (video,) = [p.name for p in gt.iterdir()]
    # 6-frame video, frames=paper: the two centre frames, named like the inputs
    assert sorted(p.name for p in (saved / video).iterdir()) == ["00002.png", "00003.png"]
    assert not (tmp_path / "val_images" / "epoch_0001").exists()

    scored = run_eval(_eval_config([f"results={saved}", f"gt={gt}", f"output={tmp_path / 'saved.json'}"]))
    assert scored["total"]["frames"] == 2
    assert scored["total"]["psnr"] == pytest.approx(metrics["val/psnr"], abs=1e-4)
    assert scored["total"]["ssim"] == pytest.approx(metrics["val/ssim"], abs=1e-5)

    rerun = run_eval(
        _eval_config(
            [
                f"input={tiny_dataset}",
                "split=val",
                f"checkpoint={tmp_path / 'checkpoints' / 'last.ckpt'}",
                f"output={tmp_path / 'rerun' / 'metrics.json'}",
            ]
        )
    )
    assert rerun["total"]["frames"] == 2
    # streaming inference against per-window validation: the same frames up to float round-off
    assert rerun["total"]["psnr"] == pytest.approx(metrics["val/psnr"], abs=1e-2)
    assert rerun["total"]["ssim"] == pytest.approx(metrics["val/ssim"], abs=1e-4)


@pytest.mark.slow
def test_resume_at_an_epoch_boundary_ends_with_the_same_weights(smoke_overrides: list[str], tmp_path: Path) -> None:
    # 2 epochs straight against 1 + 1 resumed at the end of the first (a boundary like any later one), 2 steps of
    # one clip per epoch; only last.ckpt is compared: no export of the best weights
    base = [*smoke_overrides, "logger=none", "trainer.num_sanity_val_steps=1", "data.batch_size=1"]
    base += ["export_original=false"]
    straight = tmp_path / "straight"
    train(compose_train([*base, f"paths.output_dir={straight}", "trainer.max_epochs=2"]))
    split = tmp_path / "split"
    train(compose_train([*base, f"paths.output_dir={split}", "trainer.max_epochs=1"]))
    resumed = tmp_path / "resumed"
    train(
        compose_train(
            [
                *base,
                f"paths.output_dir={resumed}",
                "trainer.max_epochs=2",
                f"ckpt_path={split / 'checkpoints' / 'last.ckpt'}",
            ]
        )
    )
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
def test_last_ckpt_is_the_end_of_the_run_when_the_best_epoch_was_earlier(
    smoke_overrides: list[str], tmp_path: Path
) -> None:
    """Lightning writes a checkpoint callback's last.ckpt with its top-k saves only, and at the end of training only
    if it never wrote one: without the interval checkpoint (``~callbacks.interval_checkpoint``, or once its timer has
    fired), a run whose best epoch came early left last.ckpt there, and ``ckpt_path=.../last.ckpt`` trained the later
    epochs again. The best checkpoint here follows the earliest epoch (monitor=epoch, mode=min), as it does when
    val/psnr stops improving."""
    run = tmp_path / "run"
    overrides = [*smoke_overrides, "logger=none", "data.batch_size=1", "export_original=false"]
    overrides += ["~callbacks.interval_checkpoint"]
    overrides += ["callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min"]
    train(compose_train([*overrides, f"paths.output_dir={run}", "trainer.max_epochs=3"]))
    assert torch.load(run / "checkpoints" / "epoch_0000.ckpt", weights_only=True)["global_step"] == 2  # the best
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6  # 3 epochs of 2


@pytest.mark.slow
def test_multirun_sweeps_learning_rates_into_separate_folders(tiny_dataset: Path, tmp_path: Path) -> None:
    result = run_command(
        [
            *smoke_cli_args(tiny_dataset, multirun=True),
            # each job as small as a run can be: one batch of one clip, no sanity check (each override is in the
            # job's folder name, which stays under its 200 characters)
            "data.batches_per_epoch=1",
            "data.batch_size=1",
            "trainer.num_sanity_val_steps=0",
            "optimizer.lr=1e-4,3e-4",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").iterdir())
    jobs = [j for j in jobs if j.is_dir()]
    # each job's folder is named by its number and overrides (the data root, a path, is left out)
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    assert "optimizer.lr=0.0001" in jobs[0].name and "optimizer.lr=0.0003" in jobs[1].name
    assert "data.root" not in jobs[0].name
    lrs = []
    for job in jobs:
        config = (job / ".hydra" / "config.yaml").read_text()
        lrs.append(next(line.split(":")[1].strip() for line in config.splitlines() if line.strip().startswith("lr:")))
        assert list((job / "tensorboard").glob("events.out.tfevents.*")), f"no TensorBoard run in {job}"
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert sorted(float(x) for x in lrs) == [1e-4, 3e-4]


@pytest.mark.slow
def test_ddp_cpu_trains_with_two_processes(tiny_dataset: Path, tmp_path: Path) -> None:
    result = run_command(
        [
            *smoke_cli_args(tiny_dataset),
            "trainer=ddp_cpu",
            "logger=csv",
            # one batch of one clip per rank, no sanity check, no export: the ranks still meet at every step
            "data.batches_per_epoch=1",
            "data.batch_size=1",
            "trainer.num_sanity_val_steps=0",
            "export_original=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "distributed_backend=gloo" in output
    assert "All distributed processes registered. Starting with 2 processes" in output
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_bad_data_root_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    result = run_command(
        [console_script("cdvd-train"), "experiment=smoke", f"data.root={missing}", "data.synthesize=null"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert str(missing) in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_find_lr_writes_plot_and_overrides(
    smoke_overrides: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cdvd.training.lr_finder import find_lr

    overrides = [o for o in smoke_overrides if not o.startswith("~callbacks")]
    cfg = compose_config(
        "find_lr", [*overrides, "lr_finder.num_iter=6", "model.flow_lr_scale=0.1", "lr_finder.device=cpu"]
    )
    with caplog.at_level(logging.WARNING):
        result = find_lr(cfg)
    assert result["plot"].is_file() and result["plot"].stat().st_size > 1000
    text = result["overrides"].read_text()
    assert "lr:" in text and "max_lr:" in text
    lrs = result["history"]["lr"]
    assert lrs[0] < lrs[-1]
    assert result["lr"] < result["max_lr"] <= lrs[-1]  # as OneCycle expects, inside what was tried
    # a suggestion below the tested range (a curve that never falls in 6 steps) says how to test lower
    assert result["lr"] >= lrs[0] or "lower lr_finder.start_lr" in caplog.text


def test_find_lr_keeps_the_flow_group_ratio() -> None:
    from cdvd.training.lr_finder import RatioKeepingExponentialLR

    net = CDVDTSP(n_feat=4, n_resblock=1)
    optimizer = torch.optim.Adam(build_param_groups(net, 1e-6, 0.1))
    schedule = RatioKeepingExponentialLR(optimizer, end_lr=1e-2, num_iter=5)
    for _ in range(4):
        optimizer.step()
        schedule.step()
    first, flow = (g["lr"] for g in optimizer.param_groups)
    assert first == pytest.approx(1e-2)
    assert flow == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("trainer_kwargs", "data_kwargs"),
    [
        ({"max_epochs": 3}, {"batch_size": 2}),
        ({"max_epochs": 3}, {"batch_size": 4}),  # a last short batch
        ({"max_epochs": 2, "accumulate_grad_batches": 2}, {"batch_size": 1}),
        ({"max_epochs": 5, "max_steps": 7}, {"batch_size": 1}),
        ({"max_epochs": 2, "limit_train_batches": 2}, {"batch_size": 1}),
        ({"max_epochs": 2, "limit_train_batches": 0.5}, {"batch_size": 1, "batches_per_epoch": 5}),
        ({"max_epochs": -1, "max_steps": 9}, {"batch_size": 2}),
    ],
)
def test_onecycle_counts_the_steps_lightning_counts_without_building_a_loader(
    tiny_dataset: Path, trainer_kwargs: dict, data_kwargs: dict
) -> None:
    """OneCycle's total steps come from the data module's epoch length: the same number as Lightning's
    ``estimated_stepping_batches``, but Lightning's loaders stay unbuilt (building them early loses a resumed
    checkpoint's loader state: the interrupted epoch would start over)."""
    import pytorch_lightning as pl

    from cdvd.data.datamodule import DeblurDataModule
    from cdvd.training.module import onecycle_total_steps

    def attached() -> pl.Trainer:
        datamodule = DeblurDataModule(root=tiny_dataset, patch_size=32, seed=0, **data_kwargs)
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, **trainer_kwargs)
        trainer.strategy.connect(_tiny_module(lr=1e-4, flow_lr_scale=0.1))
        trainer._data_connector.attach_data(trainer.lightning_module, datamodule=datamodule)
        return trainer

    ours = attached()
    steps = onecycle_total_steps(ours)
    assert ours.fit_loop._combined_loader is None, "the training loader was built"
    assert steps == attached().estimated_stepping_batches


def test_validation_logs_the_blurry_input_as_baseline_and_captions_the_strip(tmp_path: Path) -> None:
    """val/psnr_input and val/ssim_input score the blurry centre frames as val/psnr scores the output (the protocol's
    functions, the same frames), val/psnr_gain is the difference, and TensorBoard's strip has a caption band above
    panels that are the frames themselves."""
    import cv2
    import numpy as np
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader

    from cdvd.evaluation.metrics import psnr_protocol, ssim_protocol, to_uint8

    generator = torch.Generator().manual_seed(3)
    samples = []
    for _ in range(4):  # two batches of two 5-frame clips
        sharp = torch.rand(5, 3, 32, 48, generator=generator)
        blur = (sharp + 0.08 * torch.randn(sharp.shape, generator=generator)).clamp(0, 1)
        samples.append({"blur": blur, "sharp": sharp})
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="tb"),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    (logged,) = trainer.validate(_tiny_module(), dataloaders=DataLoader(samples, batch_size=2), verbose=False)

    blur_centre = torch.stack([s["blur"][2] for s in samples])
    sharp_centre = torch.stack([s["sharp"][2] for s in samples])
    assert logged["val/psnr_input"] == pytest.approx(psnr_protocol(blur_centre, sharp_centre).mean().item(), abs=1e-4)
    assert logged["val/ssim_input"] == pytest.approx(ssim_protocol(blur_centre, sharp_centre).mean().item(), abs=1e-5)
    assert logged["val/psnr_gain"] == pytest.approx(logged["val/psnr"] - logged["val/psnr_input"], abs=1e-4)
    assert logged["val/psnr_gain"] != 0  # an untrained net does not return its input

    (events,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    (image,) = accumulator.Images("val/blurry_stage1_output_sharp")
    encoded = np.frombuffer(image.encoded_image_string, np.uint8)
    strip = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    band = strip.shape[0] - 32
    assert band > 0 and strip.shape[1] == 4 * 48 + 3 * 2  # four panels, 2-pixel separators
    for index, frame in ((0, blur_centre[0]), (3, sharp_centre[0])):  # blurry | stage 1 | output | sharp
        left = index * (48 + 2)
        assert np.array_equal(strip[band:, left : left + 48], to_uint8(frame))
    for index in range(4):
        assert strip[:band, index * 50 : index * 50 + 48].max() > 200, f"panel {index} has no caption"


def test_the_verdict_against_the_blurry_input_says_why_when_below() -> None:
    from cdvd.training.run import baseline_verdict

    assert baseline_verdict({"val/psnr": 27.0}, 10) is None  # no baseline logged: nothing to say
    level, line = baseline_verdict({"val/psnr": 27.02, "val/psnr_input": 26.57}, 400)
    assert level == logging.INFO and "+0.45 dB" in line and "below" not in line
    level, line = baseline_verdict({"val/psnr": 6.3, "val/psnr_input": 26.57}, 4)
    assert level == logging.WARNING and "-20.27 dB" in line and "4 steps are too few" in line
