"""Trust on the training side: a file never chooses what code runs, a resumed run keeps what it logged, and the
settings of a search, a tracker or a frame store that cannot work end in one line before the work.

Each case goes through the documented Python API (``DeblurModule.load_from_checkpoint``) or the command line.
"""

from __future__ import annotations

import csv
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers.cli import compose_train, console_script, run_command, smoke_cli_args

from cdvd.checkpoints import CheckpointError
from cdvd.data import FrameStore, pack_dataset
from cdvd.errors import ConfigError, DataError
from cdvd.losses import L1HEMLoss
from cdvd.models import CDVDTSP
from cdvd.targets import allowed_targets
from cdvd.training.module import DeblurModule
from cdvd.training.sweeps import CheckOptunaSearch
from cdvd.training.tracking import check_logger_stores

README = Path(__file__).resolve().parents[1] / "README.md"

# ------------------------------------------------------------------------------------------------------------
# checkpoints of plain data whose configs name other code


def _writers(marker: Path) -> dict[str, dict[str, Any]]:
    """Configs that write ``marker`` when Hydra instantiates them (each a different way a file could do it)."""
    path = {"_target_": "pathlib.Path", "_args_": [str(marker)]}
    source = Path(__file__)
    return {
        "Path.write_text": {"_target_": "pathlib.Path.write_text", "_args_": [path, "pwned"]},
        "builtins.open": {"_target_": "builtins.open", "_args_": [str(marker), "w"]},
        "shutil.copyfile": {"_target_": "shutil.copyfile", "_args_": [str(source), str(marker)]},
        "torch.save": {"_target_": "torch.save", "_args_": [{"a": 1}, str(marker)]},
    }


def _hparams(net: CDVDTSP) -> dict[str, Any]:
    return {
        "net": {"_target_": "cdvd.models.CDVDTSP", "n_feat": net.n_feat, "n_resblock": net.n_resblock},
        "loss": {"_target_": "cdvd.losses.L1HEMLoss"},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4},
        "scheduler": None,
    }


def _placements(writer: dict[str, Any]) -> dict[str, tuple[str, Any, str]]:
    """Where in the hyper-parameters a writer can sit: (part, its config, the key the message must name)."""
    return {
        "loss": ("loss", writer, "loss._target_"),
        "nested-arg": ("loss", {"_target_": "cdvd.losses.L1HEMLoss", "_args_": [writer]}, "loss._args_[0]._target_"),
        "nested-kwarg": ("net", {"_target_": "cdvd.models.CDVDTSP", "n_feat": writer}, "net.n_feat._target_"),
        "partial-optimizer": ("optimizer", {**writer, "_partial_": True}, "optimizer._target_"),
        "scheduler": ("scheduler", {"scheduler": writer, "interval": "epoch"}, "scheduler.scheduler._target_"),
        "seed": ("seed", writer, "seed._target_"),
    }


def _crafted(path: Path, part: str, config: Any) -> Path:
    """A checkpoint of plain data, as Lightning writes them, whose hyper-parameters hold ``config`` as ``part``."""
    import pytorch_lightning as pl

    net = CDVDTSP(n_feat=4, n_resblock=1)
    checkpoint = {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {**_hparams(net), part: config},
    }
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("writer", ["Path.write_text", "builtins.open", "shutil.copyfile", "torch.save"])
@pytest.mark.parametrize("placement", ["loss", "nested-arg", "nested-kwarg", "partial-optimizer", "scheduler", "seed"])
def test_load_from_checkpoint_builds_only_cdvds_own_classes(tmp_path: Path, writer: str, placement: str) -> None:
    marker = tmp_path / "PWNED"
    part, config, key = _placements(_writers(marker)[writer])[placement]
    path = _crafted(tmp_path / "evil.ckpt", part, config)
    with pytest.raises(CheckpointError) as info:
        DeblurModule.load_from_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert f"hyper_parameters {key}=" in message and "not one of cdvd's own classes" in message, message
    assert not marker.exists(), "a checkpoint's config ran code"


def test_an_interpolation_cannot_make_a_config_while_building(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    hidden = f"${{oc.create:{{_target_: builtins.open, _args_: [{marker}, w]}}}}"
    path = _crafted(tmp_path / "evil.ckpt", "loss", {"_target_": "cdvd.losses.L1HEMLoss", "l1_weight": hidden})
    with pytest.raises(CheckpointError, match=r"hyper_parameters loss\.l1_weight=.* is an interpolation"):
        DeblurModule.load_from_checkpoint(path)
    assert not marker.exists()


def test_foreign_settings_are_one_line_a_part_of_ones_own_replaces_them_torchs_still_load(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = _crafted(tmp_path / "evil.ckpt", "loss", _writers(marker)["Path.write_text"])
    own = {"_target_": "cdvd.losses.L1HEMLoss"}
    module = DeblurModule.load_from_checkpoint(path, loss=own)  # the caller's own loss config: nothing to check
    assert isinstance(module.loss, L1HEMLoss) and not marker.exists()
    # no hyper-parameters: the network is built from the architecture record, which is file data too
    checkpoint = torch.load(path, weights_only=True)
    checkpoint.pop("hyper_parameters")
    checkpoint["cdvd_architecture"] = {"n_feat": 4, "n_resblock": 1, **_writers(marker)["builtins.open"]}
    torch.save(checkpoint, tmp_path / "arch.ckpt")
    with pytest.raises(CheckpointError, match=r"arch\.ckpt: hyper_parameters net\._target_=builtins\.open is not"):
        DeblurModule.load_from_checkpoint(tmp_path / "arch.ckpt")
    assert not marker.exists()
    unknown = _crafted(tmp_path / "unknown.ckpt", "evil", 1)
    with pytest.raises(CheckpointError, match=r"unknown\.ckpt: hyper_parameters evil is not a setting"):
        DeblurModule.load_from_checkpoint(unknown)
    wrong = _crafted(tmp_path / "wrong.ckpt", "loss", {"_target_": "cdvd.losses.L1HEMLoss", "bogus": 1})
    with pytest.raises(CheckpointError, match=r"wrong\.ckpt: its hyper_parameters do not build") as info:
        DeblurModule.load_from_checkpoint(wrong)
    assert "\n" not in str(info.value)
    # torch's own optimisers and schedulers, as a command line names them (optimizer._target_=torch.optim.SGD) or as
    # a module built from a functools.partial stores them (torch.optim.sgd.SGD), still load
    sgd = {"_target_": "torch.optim.sgd.SGD", "_partial_": True, "lr": 0.1}
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 3}
    built = {}
    for part, config in (("optimizer", sgd), ("scheduler", {"scheduler": cosine, "interval": "epoch"})):
        built[part] = DeblurModule.load_from_checkpoint(_crafted(tmp_path / f"{part}.ckpt", part, config))
        assert built[part].hparams[part] == config
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert isinstance(built["optimizer"].optimizer_factory(params=params), torch.optim.SGD)
    assert {"torch.optim.SGD", "torch.optim.sgd.SGD"} <= allowed_targets()["optimizer"]
    assert not {"pathlib.Path.write_text", "builtins.open"} & set().union(*allowed_targets().values())


@pytest.mark.slow
@pytest.mark.parametrize("case", ["writer-in-hyper_parameters", "no-lightning-version"])
def test_resume_from_a_checkpoint_naming_other_code_is_one_line(tiny_dataset: Path, tmp_path: Path, case: str) -> None:
    marker = tmp_path / "PWNED"
    path = _crafted(tmp_path / "evil.ckpt", "loss", _writers(marker)["Path.write_text"])
    if case == "no-lightning-version":  # what a hand-made file lacks: Lightning's KeyError before
        checkpoint = torch.load(path, weights_only=True)
        del checkpoint["pytorch-lightning_version"]
        torch.save(checkpoint, path)
    args = [*smoke_cli_args(tiny_dataset), "model.net.n_feat=4", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_command([*args, f"ckpt_path={path}"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cdvd-train: error: ") and str(path) in last, last
    if case == "no-lightning-version":
        assert "not a training checkpoint (no pytorch-lightning_version)" in last, last
    else:
        assert "hyper_parameters loss._target_=pathlib.Path.write_text is not one of cdvd's own" in last, last
    assert not marker.exists()


@pytest.mark.slow
def test_hydras_pickle_rerun_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    class _Payload:
        def __reduce__(self):  # noqa: ANN204 - pickle protocol
            return (open, (str(marker), "w"))

    config = tmp_path / "config.pickle"
    config.write_bytes(pickle.dumps(_Payload()))
    for flag in (["--experimental-rerun", str(config)], [f"--experimental-rer={config}"]):
        result = run_command([console_script("cdvd-train"), *flag], cwd=tmp_path, timeout=300)
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.strip().startswith("cdvd-train: error: --experimental-rerun reads a pickle")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not marker.exists(), "Hydra unpickled a file"


# ------------------------------------------------------------------------------------------------------------
# a resumed CSV run


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_a_resumed_csv_run_keeps_its_earlier_rows(smoke_overrides: list[str], tmp_path: Path) -> None:
    from cdvd.training.run import train

    base = [*smoke_overrides, "logger=csv", "model.net.n_feat=4", "data.batches_per_epoch=1"]
    train(compose_train([*base, "trainer.max_epochs=1"]))
    metrics = tmp_path / "csv" / "metrics.csv"
    first = _csv_rows(metrics)
    assert {row["epoch"] for row in first if row["epoch"]} == {"0"}
    last = tmp_path / "checkpoints" / "last.ckpt"
    train(compose_train([*base, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    rows = _csv_rows(metrics)
    assert rows[: len(first)] == first, "the resumed run erased or changed the earlier rows"
    assert {row["epoch"] for row in rows[len(first) :] if row["epoch"]} == {"1"}


# ------------------------------------------------------------------------------------------------------------
# Optuna searches


def test_search_settings_optuna_cannot_use_are_named() -> None:
    sweeper = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    good = {"optimizer.lr": "tag(log, interval(1e-5, 1e-3))"}
    CheckOptunaSearch(sweeper, 2, 1, good, ["optimizer.lr=tag(log, interval(2e-3, 3e-3))", "seed=1"])
    cases = [
        ((0, 1, good, []), r"hydra\.sweeper\.n_trials=0: must be"),
        ((2, 0, good, []), r"hydra\.sweeper\.n_jobs=0: must be"),
        ((2, 1, {"optimizer.lr": "tag(log, interval(3e-4, 1e-5))"}, []), r"hydra\.sweeper\.params\.optimizer\.lr="),
        ((2, 1, good, ["optimizer.lr=tag(log, interval(3e-4, 1e-5))"]), r"^optimizer\.lr=tag.*low"),
        ((2, 1, good, ["optimizer.lr=tag(log, interval(0, 1e-5))"]), r"^optimizer\.lr=tag.*larger than 0"),
    ]
    for arguments, match in cases:
        with pytest.raises(ConfigError, match=match):
            CheckOptunaSearch(sweeper, *arguments)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optimizer.lr=tag(log, interval(3e-4, 1e-5))", "optimizer.lr=tag(log, interval(3e-4, 1e-5))"),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0"),
    ],
    ids=["reversed-interval", "no-trials"],
)
def test_a_search_that_cannot_run_is_one_line_before_any_trial(
    tiny_dataset: Path, tmp_path: Path, override: str, named: str
) -> None:
    sweep = tmp_path / "sweep"
    args = [*smoke_cli_args(tiny_dataset, multirun=True), "hparams_search=lr_optuna", override]
    result = run_command([*args, f"hydra.sweep.dir={sweep}", "logger=none"], cwd=tmp_path)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]], result.stderr[-3000:]
    assert result.stderr.startswith(f"cdvd-train: error: {named}"), result.stderr
    assert not sweep.exists(), "a trial ran"


def _readme_search_override() -> str:
    """The override the README gives for changing a search range on the command line."""
    section = README.read_text().split("### Hyper-parameter search (Optuna)", 1)[1].split("\n### ", 1)[0]
    (override,) = re.findall(r"`'([^`]*interval\([^`]*)'`", section)
    return override


@pytest.mark.slow
def test_the_readmes_search_range_override_runs(tiny_dataset: Path, tmp_path: Path) -> None:
    override = _readme_search_override()
    key, _, value = override.partition("=")
    # the README's own key, with a range outside the config's (1e-5..1e-3): the trial's value shows which was used
    override = f"{key}={value.replace('interval(1e-5, 3e-4)', 'interval(2e-3, 3e-3)')}"
    assert "interval(2e-3, 3e-3)" in override, override
    sweep = tmp_path / "sweep"
    args = [*smoke_cli_args(tiny_dataset, multirun=True), "hparams_search=lr_optuna", "hydra.sweeper.n_trials=1"]
    args += ["data.batches_per_epoch=1", "data.batch_size=1", "trainer.num_sanity_val_steps=0"]
    args += ["export_original=false", "logger=none", "model.net.n_feat=4", f"hydra.sweep.dir={sweep}", override]
    result = run_command(args, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_params"]
    assert 2e-3 <= best["optimizer.lr"] <= 3e-3, best


# ------------------------------------------------------------------------------------------------------------
# MLflow stores that cannot be written


def test_an_mlflow_store_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    def check(uri: str) -> None:
        check_logger_stores({"mlflow": {"_target_": "pytorch_lightning.loggers.MLFlowLogger", "tracking_uri": uri}})

    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    for uri, reason in (
        ("sqlite:////proc/cdvd-test.db", "cannot write in /proc"),
        (f"sqlite:///{not_a_folder}/sub/x.db", f"{not_a_folder} is not a folder"),
        (f"sqlite:///{tmp_path}", f"{tmp_path} is a folder, not a database file"),
        (f"file://{not_a_folder}/mlruns", f"{not_a_folder} is not a folder"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"logger.mlflow.tracking_uri={uri}: {reason}")):
            check(uri)
    for uri in (f"sqlite:///{tmp_path}/new/sub/mlruns.db", f"sqlite:///{tmp_path}/mlruns.db", "http://host:5000"):
        check(uri)  # MLflow makes the missing folders; servers are not checked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"], "the check left files behind"


@pytest.mark.slow
def test_training_with_an_unwritable_mlflow_store_stops_at_once(tiny_dataset: Path, tmp_path: Path) -> None:
    uri = "sqlite:////proc/cdvd-test.db"  # MLflow retried this one for minutes
    args = [*smoke_cli_args(tiny_dataset), "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"]
    result = run_command([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=90)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cdvd-train: error: logger.mlflow.tracking_uri={uri}: cannot write in /proc"), last
    assert "retried" not in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------------------
# damaged LMDB frame stores


def _main_root_page(data: bytes, page: int) -> int:
    """The root page of an LMDB file's main B-tree, from the newer of its two meta pages (64-bit layout: a 16-byte
    page header, then magic, version, address, map size, two 48-byte database records, last page, transaction)."""
    newest = max((0, 1), key=lambda meta: struct.unpack_from("<Q", data, meta * page + 144)[0])
    return struct.unpack_from("<Q", data, newest * page + 128)[0]


def test_a_truncated_or_damaged_store_is_named_when_opened(tmp_path: Path, tiny_dataset: Path) -> None:
    store = pack_dataset(tiny_dataset, tmp_path / "whole.lmdb").output
    data = (store / "data.mdb").read_bytes()
    cut = tmp_path / "cut.lmdb"
    cut.mkdir()
    (cut / "data.mdb").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"frame store file {re.escape(str(cut / 'data.mdb'))} is truncated"):
        _ = FrameStore(cut).meta
    # the B-tree's root page overwritten (same size): LMDB's own error, named
    damaged = tmp_path / "damaged.lmdb"
    damaged.mkdir()
    page = FrameStore(store)._environment().stat()["psize"]
    root = _main_root_page(data, page)
    broken = bytearray(data)
    broken[root * page : (root + 1) * page] = b"\x5a" * page
    (damaged / "data.mdb").write_bytes(bytes(broken))
    with pytest.raises(DataError, match=r"damaged\.lmdb/data\.mdb is damaged .*MDB_"):
        _ = FrameStore(damaged).meta


@pytest.mark.slow
def test_training_from_a_truncated_store_is_one_line_not_sigbus(tmp_path: Path, tiny_dataset: Path) -> None:
    store = pack_dataset(tiny_dataset, tmp_path / "data.lmdb").output
    data_file = store / "data.mdb"
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    args = [*smoke_cli_args(tiny_dataset), f"data.frame_store={store}", "logger=none"]
    result = run_command([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, (result.stdout + result.stderr)[-3000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cdvd-train: error: frame store file {data_file} is truncated"), last
