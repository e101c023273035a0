"""Faults around training and checkpoints, tried as a user would: crafted pickles, kills, truncated files, bad settings.

Every case must end with one line naming the file or setting and a non-zero exit (no traceback), never run code from
a file, and lose at most the checkpoint interval of work.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.cli import console_script, run_command, smoke_cli_args
from helpers.processes import dead_pid

import cdvd
from cdvd.atomic import remove_stale_temp_files, temp_path
from cdvd.checkpoints import (
    ARCH_KEY,
    CheckpointError,
    architecture,
    load_flow_weights,
    load_weights,
    safe_torch_load,
)
from cdvd.data.resumable import ResumableDataLoader
from cdvd.errors import ConfigError, check_count, check_positive_number, user_message
from cdvd.models import CDVDTSP
from cdvd.settings import plain, read_settings
from cdvd.training.callbacks import AtomicCheckpointIO
from cdvd.training.checks import (
    TrainerSettings,
    TrainingSettings,
    check_accelerator,
    check_resume_checkpoint,
)
from cdvd.training.module import DeblurModule
from cdvd.training.resume import config_subdir, run_dir, run_folder_of_checkpoint

# ------------------------------------------------------------------------------------------------------------
# crafted pickles


class _Payload:
    """Unpickling this creates the marker file: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (open, (str(self.marker), "w"))


def _write_payload(path: Path, marker: Path, kind: str) -> Path:
    """A checkpoint-looking file that carries the payload, in the shape each loader expects."""
    net = CDVDTSP(n_feat=4, n_resblock=1)
    if kind == "lightning":
        obj = {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"net": {"_target_": "cdvd.models.CDVDTSP", "n_feat": 4, "n_resblock": 1}},
            "epoch": 0,
            "global_step": 1,
            "evil": _Payload(marker),
        }
    elif kind == "flow":
        obj = {**{k: v for k, v in net.flow.pwc.state_dict().items()}, "evil": _Payload(marker)}
    else:
        obj = {**net.state_dict(), "evil": _Payload(marker)}
    torch.save(obj, path)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a loader ran code from a crafted checkpoint"


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pytorch"])
def test_crafted_pickle_is_refused_by_every_library_loader(tmp_path: Path, marker: Path, suffix: str) -> None:
    lightning = _write_payload(tmp_path / f"lightning{suffix}", marker, "lightning")
    plain_state = _write_payload(tmp_path / f"state{suffix}", marker, "state")
    flow = _write_payload(tmp_path / f"flow{suffix}", marker, "flow")
    loaders = [
        (lambda: cdvd.load_model(lightning), lightning),
        (lambda: cdvd.load_model(plain_state), plain_state),
        (lambda: load_weights(CDVDTSP(n_feat=4, n_resblock=1), lightning), lightning),
        (lambda: load_flow_weights(CDVDTSP(n_feat=4, n_resblock=1), flow), flow),
        (lambda: DeblurModule.load_from_checkpoint(lightning), lightning),
        (lambda: AtomicCheckpointIO().load_checkpoint(lightning, weights_only=False), lightning),
    ]
    for load, path in loaders:
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert str(path) in message and "\n" not in message, message
        assert not marker.exists()


def _cli_payload_case(case: str, tmp_path: Path, marker: Path, tiny_dataset: Path) -> list[str]:
    ckpt = _write_payload(tmp_path / "evil.ckpt", marker, "lightning")
    if case == "deblur":
        clip = tiny_dataset / "val" / "blur"
        return [console_script("cdvd-deblur"), f"input={clip}", f"output={tmp_path / 'out'}", f"checkpoint={ckpt}"]
    if case == "eval":
        return [
            console_script("cdvd-eval"),
            f"input={tiny_dataset}",
            "split=val",
            f"checkpoint={ckpt}",
            f"output={tmp_path / 'eval' / 'metrics.json'}",
        ]
    train = [*smoke_cli_args(tiny_dataset), f"hydra.run.dir={tmp_path / 'run'}", "logger=none"]
    if case == "pretrained":
        return [*train, f"model.pretrained={ckpt}"]
    if case == "flow_pretrained":
        flow = _write_payload(tmp_path / "network-default.pytorch", marker, "flow")
        return [*train, f"model.flow_pretrained={flow}"]
    return [*train, f"ckpt_path={ckpt}"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["deblur", "eval", "pretrained", "flow_pretrained", "ckpt_path"])
def test_crafted_pickle_never_runs_through_the_command_lines(
    case: str, tmp_path: Path, marker: Path, tiny_dataset: Path
) -> None:
    result = run_command(_cli_payload_case(case, tmp_path, marker, tiny_dataset), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert ("evil.ckpt" in output) or ("network-default.pytorch" in output), output[-3000:]
    assert "cannot be loaded safely" in output


# ------------------------------------------------------------------------------------------------------------
# plain checkpoints: what ours hold, and reloading them


def test_plain_turns_configs_and_paths_into_plain_data() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"train": {"size": [48, 64], "seed": 0}, "root": "${oc.env:HOME}"})
    value = plain({"cfg": cfg, "path": Path("/a/b"), "pair": (1, Path("c"))})
    assert value == {
        "cfg": {"train": {"size": [48, 64], "seed": 0}, "root": os.environ["HOME"]},
        "path": "/a/b",
        "pair": (1, "c"),
    }
    assert type(value["cfg"]["train"]["size"]) is list


def test_smoke_checkpoint_on_the_built_in_data_settings_loads_safely_and_rebuilds(
    smoke_overrides: list[str], tmp_path: Path, tiny_dataset: Path
) -> None:
    """The data module's `synthesize` mapping (a DictConfig) no longer makes our checkpoints unsafe to read."""
    from helpers.cli import compose_train

    from cdvd.training.run import train

    overrides = [o for o in smoke_overrides if o != "data.synthesize=null"]
    overrides += ["logger=none", "trainer.max_epochs=1", "model.net.n_feat=4"]
    # the built-in data's synthesize settings, pointed at folders made with them already (nothing is synthesized:
    # the settings of the tiny dataset, conftest.py)
    for kind, n_videos, n_frames in (("train", 3, 7), ("val", 1, 6)):
        prefix = f"data.synthesize.{kind}"
        overrides += [f"{prefix}.n_videos={n_videos}", f"{prefix}.n_frames={n_frames}", f"{prefix}.size=[48,64]"]
    cfg = compose_train(overrides)
    assert cfg.data.synthesize is not None
    _, objects = train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = safe_torch_load(last)  # weights_only=True
    assert checkpoint["datamodule_hyper_parameters"]["synthesize"]["train"]["n_videos"] == 3
    assert sorted(p.name for p in tiny_dataset.iterdir()) == ["train", "val"]  # no data made beside them
    module = DeblurModule.load_from_checkpoint(last)  # no net, loss or optimizer passed
    assert module.net.n_feat == 4 and type(module.loss).__name__ == "L1HEMLoss"
    trained = objects["model"].net.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in module.net.state_dict().items())
    assert module.configure_optimizers() is not None


def test_module_takes_configs_only_and_keeps_them_as_its_hyper_parameters(tmp_path: Path) -> None:
    net = {"_target_": "cdvd.models.CDVDTSP", "n_feat": 4, "n_resblock": 1, "residual": True}
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-4}
    torch.manual_seed(0)
    module = DeblurModule(net, None, optimizer)
    assert module.hparams.net == net and module.hparams.optimizer == optimizer and module.hparams.loss is None
    assert module.lr == 3e-4  # read from the config: no optimiser is built to find it
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    again = DeblurModule.load_from_checkpoint(path)
    assert again.net.residual and isinstance(again.configure_optimizers(), torch.optim.AdamW)
    with pytest.raises(ValueError, match="loss="):
        again.compute_loss({"blur": torch.zeros(1, 5, 3, 16, 16), "sharp": torch.zeros(1, 5, 3, 16, 16)})
    with pytest.raises(TypeError, match="net as its _target_ config"):
        DeblurModule(CDVDTSP(n_feat=4, n_resblock=1))  # one constructor form
    # no lr in the config: the class's own default, from its signature
    sgd = DeblurModule(net, None, {"_target_": "torch.optim.SGD", "_partial_": True})
    assert sgd.lr == 1e-3 and sgd.configure_optimizers().param_groups[0]["lr"] == 1e-3


def test_resume_checkpoint_of_another_network_or_not_ours_is_one_line(tmp_path: Path) -> None:

    torch.manual_seed(0)
    module = DeblurModule(
        {"_target_": "cdvd.models.CDVDTSP", "n_feat": 4, "n_resblock": 1},
        {"_target_": "cdvd.losses.L1HEMLoss"},
        {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4},
    )
    path = tmp_path / "n8.ckpt"
    other = CDVDTSP(n_feat=8, n_resblock=1)
    checkpoint = {"state_dict": {f"net.{k}": v for k, v in other.state_dict().items()}, ARCH_KEY: architecture(other)}
    with pytest.raises(CheckpointError, match="n8.ckpt was written by another network: n_feat 8 .this run: 4."):
        module.check_checkpoint_matches(checkpoint, str(path))
    del checkpoint[ARCH_KEY]
    with pytest.raises(CheckpointError, match="n8.ckpt does not match this run's network"):
        module.check_checkpoint_matches(checkpoint, str(path))
    # an original CDVD-TSP state dict given as ckpt_path: not a training checkpoint
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match="n8.ckpt is not a training checkpoint"):
        AtomicCheckpointIO().load_checkpoint(path)


# ------------------------------------------------------------------------------------------------------------
# resume


def test_resolvers_put_a_resumed_run_back_into_its_folder() -> None:
    assert run_folder_of_checkpoint("outputs/smoke/runs/X/checkpoints/last.ckpt") == Path("outputs/smoke/runs/X")
    assert run_folder_of_checkpoint("/somewhere/else/last.ckpt") is None
    assert run_folder_of_checkpoint(None) is None
    assert run_dir("runs/X/checkpoints/last.ckpt", "runs/new") == "runs/X"
    assert run_dir(None, "runs/new") == "runs/new"
    assert config_subdir("runs/X/checkpoints/last.ckpt", ".hydra", ".hydra/resumed") == ".hydra/resumed"
    assert config_subdir(None, ".hydra", ".hydra/resumed") == ".hydra"


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    pid = dead_pid()
    stale = temp_path(tmp_path / "last.ckpt", pid=pid)
    live = temp_path(tmp_path / "epoch_0001.ckpt")  # this process: still writing
    other = tmp_path / ".notes.txt"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    assert stale.name.startswith(f".last.cdvd-tmp-{pid}-") and stale.suffix == ".ckpt"
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_resumable_loader_draws_the_rest_of_an_epoch_as_an_uninterrupted_one() -> None:
    data = list(range(12))
    torch.manual_seed(3)
    straight = ResumableDataLoader(data, batch_size=2, shuffle=True)
    straight.progress = lambda: 2
    iterator = iter(straight)
    seen = [next(iterator).tolist() for _ in range(3)]  # one fetched ahead of the two trained on
    state = straight.state_dict()
    rest = [b.tolist() for b in iterator]
    torch.manual_seed(99)  # a fresh process: another random state
    resumed = ResumableDataLoader(data, batch_size=2, shuffle=True)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == [seen[2], *rest]
    # a checkpoint at the end of an epoch: the next epoch starts normally
    fresh = ResumableDataLoader(data, batch_size=2, shuffle=True)
    fresh.load_state_dict({**state, "batches": 6})
    assert len(list(fresh)) == 6


def _smoke_args(data_root: Path) -> list[str]:
    """``cdvd-train experiment=smoke`` on ``data_root`` as in test_train.py, with the epoch count left to the test."""
    return [a for a in smoke_cli_args(data_root) if not a.startswith("trainer.max_epochs=")]


def _last_step(path: Path) -> int:
    # memory-mapped: the step count without reading the ~114 MB of weights and optimizer state (polled while the
    # run trains on the same cores); last.ckpt is replaced whole (renamed into place), never seen half-written
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except (OSError, RuntimeError, KeyError):
        return -1


def _wait_for_step(process: subprocess.Popen, last: Path, step: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if last.is_file() and (reached := _last_step(last)) >= step:
            return reached
        time.sleep(0.2)
    return -1


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["step", "onecycle"])
def test_kill_9_mid_epoch_then_resume_ends_with_the_weights_of_an_uninterrupted_run(
    tiny_dataset: Path, tmp_path: Path, scheduler: str
) -> None:
    # onecycle: its step count once made Lightning build the loaders before the checkpoint's loader state was
    # loaded, and the resumed run silently started the interrupted epoch over
    args = [
        *_smoke_args(tiny_dataset),
        f"scheduler={scheduler}",
        "logger=none",
        "model.net.n_feat=4",
        "data.batch_size=1",  # one clip a step: each step costs half as much, and the epoch still has 2 of them
        "trainer.max_epochs=3",
        "trainer.num_sanity_val_steps=0",
        "export_original=false",  # only last.ckpt is compared
        # last.ckpt every 3 steps (2 batches per epoch: the first in the middle of the second epoch), not every step:
        # each is ~114 MB (the full-size flow net with its optimizer state)
        "callbacks.interval_checkpoint.every_n_train_steps=3",
        "callbacks.interval_checkpoint.train_time_interval=null",
    ]
    straight = run_command([*args, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    run = tmp_path / "killed"
    last = run / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*args, f"hydra.run.dir={run}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # 2 batches per epoch: step 3 is the middle of the second epoch (a last.ckpt of step 2, from the end of the
        # first epoch, is passed over)
        reached = _wait_for_step(process, last, 3, timeout=300)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert reached >= 3, "no interval checkpoint appeared"
    steps_at_kill = _last_step(last)
    assert steps_at_kill < 6, "the run ended before it was killed"
    # a partial checkpoint of a killed writer, left beside last.ckpt
    stale = temp_path(last, pid=process.pid)
    stale.write_bytes(b"\0" * 1000)

    resumed = run_command([*args, f"ckpt_path={last}"], cwd=tmp_path)  # no run folder given: the killed one
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert not stale.exists(), "the partial file of the killed run is still there"
    assert not (tmp_path / "outputs").exists(), "the resumed run wrote a new dated folder"
    assert list((run / ".hydra").glob("resumed_*/config.yaml")), "the resumed run's config is not kept"
    a = safe_torch_load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = safe_torch_load(last)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
def test_readme_resume_on_the_built_in_data(tmp_path: Path) -> None:
    """`cdvd-train experiment=smoke`, then `ckpt_path=<run>/checkpoints/last.ckpt`, without data.synthesize=null."""
    env_data = {"CDVD_DATA_DIR": str(tmp_path / "data")}
    small = [
        "experiment=smoke",
        "model.net.n_feat=4",
        "data.batch_size=1",  # one clip a step: the 2 steps per epoch cost half as much
        "data.synthesize.train.size=64",
        "data.synthesize.val.size=64",
        "logger=none",
        "~callbacks.progress_bar",
    ]
    run = tmp_path / "outputs" / "first"
    cdvd_train = console_script("cdvd-train")
    first = _run_env([cdvd_train, *small, "trainer.max_epochs=1", f"hydra.run.dir={run}"], tmp_path, env_data)
    assert first.returncode == 0, first.stderr[-3000:]
    assert safe_torch_load(run / "checkpoints" / "last.ckpt")["global_step"] == 2  # 2 batches per epoch
    resume = [cdvd_train, *small, "trainer.max_epochs=2", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    second = _run_env(resume, tmp_path, env_data)
    assert second.returncode == 0, second.stderr[-3000:]
    assert safe_torch_load(run / "checkpoints" / "last.ckpt")["global_step"] == 4  # one more epoch, same folder
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["first"]


def _run_env(args: list[str], cwd: Path, extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------------------------------------
# user errors: one line naming the setting or file, exit 2


def test_number_checks_name_the_setting() -> None:
    assert check_positive_number("optimizer.lr", "3e-4") == pytest.approx(3e-4)
    for value, match in (("abc", "not a number"), (-1e-3, "> 0"), (0, "> 0"), (float("nan"), "finite"), (True, "")):
        with pytest.raises(ConfigError, match=f"optimizer.lr={value}.*{match}"):
            check_positive_number("optimizer.lr", value)
    # the training schema: each learning rate where it sits in the config, other keys left to their classes
    settings = read_settings(
        TrainingSettings,
        {
            "optimizer": {"_target_": "torch.optim.Adam", "lr": "3e-4", "weight_decay": 0.0, "betas": [0.9, 0.99]},
            "scheduler": {"interval": "step", "scheduler": {"_target_": "x", "max_lr": 1e-3, "pct_start": 0.3}},
            "model": {"flow_lr_scale": 0, "pretrained": None},
        },
    )
    assert settings.optimizer.lr == pytest.approx(3e-4) and settings.scheduler.scheduler.max_lr == pytest.approx(1e-3)
    for config, named in (
        ({"optimizer": {"lr": 0}}, "optimizer.lr=0: must be > 0"),
        ({"optimizer": {"weight_decay": -1}}, "optimizer.weight_decay=-1: must be >= 0"),
        ({"scheduler": {"scheduler": {"max_lr": -1}}}, "scheduler.scheduler.max_lr=-1: must be > 0"),
        ({"model": {"flow_lr_scale": -0.5}}, "model.flow_lr_scale=-0.5: must be >= 0"),
    ):
        with pytest.raises(ConfigError, match=re.escape(named)):
            read_settings(TrainingSettings, config)


def test_whole_number_settings_name_the_setting() -> None:
    assert check_count("trainer.max_epochs", -1, -1) == -1  # Lightning's "no limit"
    assert check_count("trainer.max_epochs", 7, -1) == 7
    for value, match in (
        ("abc", "not a whole number"),
        (2.5, "not a whole number"),
        (True, "not a whole"),
        (-2, "must be >= -1"),
    ):
        with pytest.raises(ConfigError, match=f"trainer.max_epochs={value}: {match}"):
            check_count("trainer.max_epochs", value, -1)
    trainer = {"max_epochs": 3, "max_steps": -1, "min_epochs": None, "precision": "32-true", "accelerator": "cpu"}
    assert read_settings(TrainerSettings, trainer, "trainer.").max_steps == -1
    with pytest.raises(ConfigError, match="trainer.accumulate_grad_batches=0: must be >= 1"):
        read_settings(TrainingSettings, {"trainer": {"max_epochs": 3, "accumulate_grad_batches": 0}})


def test_gpu_settings_without_a_gpu_name_the_setting() -> None:
    check_accelerator("cpu", 1, cuda_devices=0)
    check_accelerator("auto", 1, cuda_devices=0)
    check_accelerator("gpu", 2, cuda_devices=2)
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu: this machine has no CUDA GPU"):
        check_accelerator("gpu", 1, cuda_devices=0)
    with pytest.raises(ConfigError, match="trainer.devices=4"):
        check_accelerator("cuda", 4, cuda_devices=2)


def test_truncated_and_foreign_resume_files_are_named(tmp_path: Path) -> None:
    whole = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(5000.0)}}, whole)
    assert check_resume_checkpoint(whole) == whole
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for path in (truncated, text):
        with pytest.raises(CheckpointError, match=str(path)):
            check_resume_checkpoint(path)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        check_resume_checkpoint(tmp_path / "missing.ckpt")
    # the same files given to a loader: named, and not mistaken for an unsafe one
    for path in (truncated, text):
        with pytest.raises(CheckpointError, match=f"{path} is not a readable checkpoint"):
            cdvd.load_model(path)


def test_worker_errors_come_back_as_their_own_line(tmp_path: Path) -> None:
    from cdvd.errors import DataError

    class _Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> torch.Tensor:
            raise DataError(f"cannot decode image (unreadable or corrupt): {tmp_path / 'x.png'}")

    loader = torch.utils.data.DataLoader(_Broken(), num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # what torch hands over
    assert user_message(info.value) == f"cannot decode image (unreadable or corrupt): {tmp_path / 'x.png'}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["optimizer.lr=abc"], "optimizer.lr=abc"),
        (["optimizer.lr=-1e-3"], "optimizer.lr=-0.001"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs=abc"),
        (["experiment=paper_gopro", "data.root=/no/such/gopro"], "trainer.accelerator=gpu"),
        (["ckpt_path=TRUNCATED"], "truncated.ckpt"),
        (["data.num_workers=1", "data.check_sizes=false", "data.root=CORRUPT"], "00003.png"),
    ],
    ids=[
        "lr-abc",
        "lr-negative",
        "max_epochs-abc",
        "paper-without-gpu",
        "truncated-ckpt_path",
        "corrupt-frame-in-worker",
    ],
)
def test_training_user_errors_are_one_line_and_exit_2(
    overrides: list[str], named: str, tiny_dataset: Path, tmp_path: Path
) -> None:
    if "trainer.accelerator=gpu" in named and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the paper experiments run here")
    if "ckpt_path=TRUNCATED" in overrides:
        whole = tmp_path / "whole.ckpt"
        torch.save({"state_dict": {"w": torch.arange(5000.0)}}, whole)
        (tmp_path / "truncated.ckpt").write_bytes(whole.read_bytes()[:3000])
        overrides = [f"ckpt_path={tmp_path / 'truncated.ckpt'}"]
    if "data.root=CORRUPT" in overrides:
        import shutil

        root = tmp_path / "data"
        shutil.copytree(tiny_dataset, root)
        for folder in (root / "train").glob("*/*/"):
            frame = folder / "00003.png"
            if frame.is_file():
                frame.write_bytes(frame.read_bytes()[:120])  # the header survives, the pixels do not
        overrides = [*overrides[:-1], f"data.root={root}"]
    base = _smoke_args(tiny_dataset)
    if overrides[0].startswith("experiment="):
        base = [console_script("cdvd-train")]
    args = [*base, "logger=none", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    result = run_command(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "cdvd-train: error:" in line]
    assert len(errors) == 1 and named in errors[0], output[-3000:]
