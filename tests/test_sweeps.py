"""Sweeps, launchers, trackers and callbacks beyond one process: Optuna, joblib, submitit, MLflow, TensorBoard
HParams, EMA; and the pieces they rest on (the optimised metric, run names, making the synthetic data once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.cli import compose_train, console_script, one_line_error, run_command, smoke_cli_args

from cdvd.data.locking import lock_path, make_once
from cdvd.training.tracking import MAX_RUN_NAME, check_logger_packages, metric_value, run_name

# the smallest sweep job users could run: one batch of one clip, no sanity check, no export
TINY = [
    "data.batches_per_epoch=1",
    "data.batch_size=1",
    "trainer.num_sanity_val_steps=0",
    "export_original=false",
]


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------------ pure pieces


def test_metric_value_reads_the_optimized_metric_and_names_a_missing_one() -> None:
    metrics = {"val/psnr": 21.5, "val/psnr_best": 22.25}
    assert metric_value(metrics, "val/psnr_best") == 22.25
    assert metric_value(metrics, "val/psnr") == 21.5
    assert metric_value(metrics, None) is None
    with pytest.raises(ValueError, match=r"optimized_metric=val/ssim_best.*val/psnr, val/psnr_best"):
        metric_value(metrics, "val/ssim_best")


def test_run_name_is_folder_safe_and_unique_when_cut() -> None:
    assert run_name(3, ["seed=1", "optimizer.lr=0.0003"]) == "3_optimizer.lr=0.0003,seed=1"
    assert run_name(0, []) == "0"
    assert "/" not in run_name(1, ["model.note=/tmp/x/y"])
    long_a = run_name(2, ["a=" + "1" * 400])
    long_b = run_name(2, ["a=" + "1" * 399 + "2"])
    assert len(long_a) == len(long_b) == MAX_RUN_NAME
    assert long_a != long_b


def test_run_name_keeps_only_the_overrides_that_matter() -> None:
    overrides = [
        "experiment=smoke",
        "logger=mlflow",
        "logger.mlflow.tracking_uri=sqlite:////tmp/x/mlruns.db",
        "paths.output_dir=/tmp/out",
        "hydra.run.dir=/tmp/run",
        "data.root=/data/DVD",
        "optimizer.lr=2e-4",
    ]
    # a single run has no job number: no "None_" in front
    assert run_name(None, overrides, ["data.root"]) == "experiment=smoke,optimizer.lr=2e-4"
    assert run_name(4, overrides, ["data.root"]) == "4_experiment=smoke,optimizer.lr=2e-4"
    assert run_name(None, ["logger=many", "data.root=/d"], ["data.root"]) is None  # the tracker names it


def test_a_tag_mlflow_refuses_is_one_line_before_training(tmp_path: Path) -> None:
    result = run_command(
        [console_script("cdvd-train"), "experiment=smoke", "logger=mlflow", "tags=[ok,bad#tag]"], cwd=tmp_path
    )
    one_line_error(result, "tags", "bad#tag")
    assert not (tmp_path / "mlruns.db").exists()


def test_a_missing_logger_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ValueError, match=r"logger\.mlflow .*pip install 'cdvd\[mlflow\]'"):
        check_logger_packages({"mlflow": {"_target_": "pytorch_lightning.loggers.MLFlowLogger"}})
    check_logger_packages({"csv": {"_target_": "pytorch_lightning.loggers.CSVLogger"}})


# Two processes race for one folder: each makes it through a staging folder renamed into place (as synthesize does),
# after a pause long enough for the other to arrive; the lock must let exactly one of them make it.
_RACER = """
import os, sys, time
from pathlib import Path
from cdvd.data.locking import make_once
target = Path(sys.argv[1])
def make():
    staging = target.parent / f".staging-{os.getpid()}"
    staging.mkdir()
    (staging / "maker").write_text(str(os.getpid()))
    time.sleep(1.5)
    staging.rename(target)  # fails if the other process made the folder meanwhile
print("made" if make_once(target, make) else "found")
"""


def test_make_once_lets_one_of_two_racing_processes_make_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "data" / "train"
    racers = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(target)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = sorted(r.communicate(timeout=60)[0].strip() for r in racers)
    assert [r.returncode for r in racers] == [0, 0]
    assert results == ["found", "made"]
    assert (target / "maker").is_file()
    assert lock_path(target).parent == target.parent
    assert make_once(target, lambda: pytest.fail("made twice")) is False


def test_ddp_slurm_trainer_follows_the_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    cfg = compose_train(["experiment=smoke", "trainer=ddp_slurm"])
    assert cfg.trainer.strategy == "ddp"
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)


def test_slurm_launcher_runs_one_task_per_gpu() -> None:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="cdvd.configs", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["experiment=smoke", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 2
    assert launcher.max_num_timeout > 0 and launcher.timeout_min > 0


def test_callbacks_and_loggers_compose_as_lists() -> None:
    cfg = compose_train(["experiment=smoke", "callbacks=[default,ema,early_stopping]", "logger=many"])
    assert {"model_checkpoint", "ema", "early_stopping"} <= set(cfg.callbacks)
    assert cfg.callbacks.ema._target_ == "pytorch_lightning.callbacks.EMAWeightAveraging"
    assert set(cfg.logger) == {"tensorboard", "csv", "mlflow"}
    assert cfg.optimized_metric == "val/psnr_best"
    search = compose_train(["experiment=smoke", "hparams_search=onecycle_optuna"])
    assert search.scheduler.scheduler._target_ == "torch.optim.lr_scheduler.OneCycleLR"
    assert search.optimized_metric == "val/psnr_best"


# ------------------------------------------------------------------------------------------- whole runs


def test_ema_weights_are_validated_checkpointed_and_exported(smoke_overrides: list[str], tmp_path: Path) -> None:
    from cdvd.checkpoints import load_model
    from cdvd.training.run import train

    cfg = compose_train(
        [*smoke_overrides, "logger=csv", "callbacks=[default,ema]", "callbacks.ema.decay=0.5", "trainer.max_epochs=1"]
    )
    metrics, objects = train(cfg)
    best = Path(objects["trainer"].checkpoint_callback.best_model_path)
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    differing = [k for k in raw if k.startswith("net.") and not torch.equal(raw[k], averaged[k])]
    assert differing, "the averaged weights equal the raw ones"
    exported = load_model(best.with_suffix(".pt")).state_dict()
    for key, value in exported.items():
        assert torch.equal(value, averaged[f"net.{key}"]), key
    # after training the module holds the averaged weights too (what validation scored)
    module_state = objects["model"].net.state_dict()
    assert all(torch.equal(module_state[k], averaged[f"net.{k}"]) for k in module_state)


@pytest.mark.slow
def test_optuna_search_writes_its_results(tiny_dataset: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_command(
        [
            *smoke_cli_args(tiny_dataset, multirun=True),
            "hparams_search=lr_optuna",
            "hydra.sweeper.n_trials=2",
            *TINY,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "setup plugin" not in output, "the sweeper's set-up noise is back"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert 1e-5 <= results["best_params"]["optimizer.lr"] <= 1e-3
    jobs = _job_dirs(sweep)
    assert len(jobs) == 2 and all("optimizer.lr=" in j.name for j in jobs)
    lrs = [yaml.safe_load((j / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] for j in jobs]
    assert results["best_params"]["optimizer.lr"] in lrs
    assert f"Best value: {results['best_value']}" in output


@pytest.mark.slow
def test_joblib_sweep_makes_the_builtin_data_once_for_both_jobs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sweep = tmp_path / "sweep"
    args = [
        console_script("cdvd-train"),
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "experiment=smoke",
        "~callbacks.progress_bar",
        "trainer.max_epochs=1",
        "data.patch_size=32",
        # the built-in synthetic data, made small
        "data.synthesize.train.n_videos=2",
        "data.synthesize.train.size=64",
        "data.synthesize.val.n_videos=1",
        "data.synthesize.val.size=64",
        *TINY,
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    ]
    assert not data.exists()
    result = subprocess.run(
        args,
        cwd=tmp_path,
        env={**os.environ, "CDVD_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    jobs = _job_dirs(sweep)
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file(), f"job {job.name} did not finish"
    for split, n in (("train", 2), ("val", 1)):
        meta = yaml.safe_load((data / "synthetic" / split / "meta.json").read_text())
        assert len(meta["videos"]) == n


@pytest.mark.slow
def test_submitit_local_sweep_runs_both_jobs(tiny_dataset: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_command(
        [
            *smoke_cli_args(tiny_dataset, multirun=True),
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            *TINY,
            "optimizer.lr=1e-4,3e-4",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = _job_dirs(sweep)
    assert len(jobs) == 2
    for job, lr in zip(jobs, (1e-4, 3e-4), strict=True):
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == lr
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert list((sweep / ".submitit").glob("*/*_result.pkl")), "submitit ran no job"


@pytest.mark.slow
def test_mlflow_and_tensorboard_hparams_of_one_run(tiny_dataset: Path, tmp_path: Path) -> None:
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'store' / 'mlruns.db'}"
    (tmp_path / "store").mkdir()
    # data.batches_per_epoch: a setting the HParams table shows only because the command line changes it
    overrides = ["data.batches_per_epoch=1", "data.batch_size=1", "optimizer.lr=2e-4", "tags=[smoke,baseline]"]
    result = run_command(
        [
            *smoke_cli_args(tiny_dataset),
            "logger=many",
            f"logger.mlflow.tracking_uri={store}",
            *overrides,
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert 0 < run.data.metrics["val/psnr"] < 60
    assert float(run.data.params["optimizer/lr"]) == 2e-4
    # named by the overrides that matter: no job number, no logger setting, no path, no tags
    cli = smoke_cli_args(tiny_dataset)[1:] + [o for o in overrides if not o.startswith("tags=")]
    assert run.info.run_name == ",".join(sorted(o for o in cli if not o.startswith("data.root=")))
    assert {"smoke": "", "baseline": ""}.items() <= run.data.tags.items()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts
    config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text())
    assert config["optimizer"]["lr"] == 2e-4 and config["tags"] == ["smoke", "baseline"]
    (ckpt,) = client.list_artifacts(run.info.run_id, "checkpoints")
    best = run_dir / "checkpoints" / Path(ckpt.path).name
    assert best.suffix == ".ckpt" and best.is_file() and ckpt.file_size == best.stat().st_size

    # TensorBoard's HParams: the main settings and the overrides, not the 100-odd entries of the whole config
    saved = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    hparams: dict[str, object] = {}
    best_psnr: list[float] = []
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        try:
            content = acc.PluginTagToContent("hparams")
        except KeyError:  # no hparams summary in this file
            content = {}
        if "_hparams_/session_start_info" in content:
            data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
            hparams |= {k: v for k, v in data.session_start_info.hparams.items()}
        if "hp/val/psnr_best" in acc.Tags()["scalars"]:
            best_psnr += [event.value for event in acc.Scalars("hp/val/psnr_best")]
    assert best_psnr == [pytest.approx(run.data.metrics["val/psnr_best"], abs=1e-4)]
    for names in (set(hparams), set(saved)):
        assert not [name for name in names if "_target_" in name]
        assert {"optimizer/lr", "data/batches_per_epoch", "model/net/n_feat", "optimizer", "experiment"} <= names
        assert len(names) <= 30
        assert not [name for name in names if name.startswith(("logger", "paths", "hydra", "tags", "data/root"))]
    assert hparams["data/batches_per_epoch"].number_value == 1 and saved["data/batches_per_epoch"] == 1
    assert hparams["optimizer"].string_value == "adam" and saved["optimizer/lr"] == 2e-4
