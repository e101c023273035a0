"""A command line Hydra cannot compose, or a config whose class refuses its arguments, ends as one line and exit 2."""

from __future__ import annotations

import os
import re

import pytest
from helpers.cli import compose_config, compose_train, console_script, run_command
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cdvd.cli.common import EXIT_USER_ERROR, FULL_ERROR, hydra_message, instantiation_message, run_hydra


def composition_error(overrides: list[str]) -> ConfigCompositionException:
    with pytest.raises(ConfigCompositionException) as caught:
        compose_train(overrides)
    return caught.value


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("dataset=gopro", "unknown setting dataset (did you mean data?)"),  # the group is called data
        ("trainer.max_epoch=3", "unknown setting trainer.max_epoch (did you mean trainer.max_epochs?)"),
        ("seeed=1", "unknown setting seeed (did you mean seed?)"),
    ],
)
def test_an_unknown_setting_names_the_closest_known_one(override: str, expected: str) -> None:
    message = hydra_message(composition_error([override]), "cdvd-train")
    assert message.startswith(expected)
    assert "\n" not in message


def test_an_unknown_argument_of_a_class_says_how_to_add_one() -> None:
    message = hydra_message(composition_error(["optimizer.lrr=1e-4"]), "cdvd-train")
    assert "did you mean optimizer.lr?" in message
    assert "+optimizer.lrr=VALUE" in message  # optimizer is instantiated: a new keyword argument can be added
    plain = hydra_message(composition_error(["qqqq=1"]), "cdvd-train")
    assert plain == "unknown setting qqqq; `cdvd-train --cfg job` prints every setting"  # nothing close, no target


def test_a_missing_group_option_lists_the_available_ones_on_one_line() -> None:
    message = hydra_message(composition_error(["data=nope"]), "cdvd-train")
    assert "'data/nope'" in message
    assert "available options in 'data': " in message
    options = message.split("available options in 'data': ")[1].split(", ")
    assert {"dvd", "gopro", "reds", "folder"} <= set(options)
    assert "\n" not in message and "search path" not in message.lower()


def test_an_instantiation_error_names_the_config_group_and_the_reason() -> None:
    from cdvd.errors import ConfigError
    from cdvd.training.run import build_part

    cfg = OmegaConf.create({"trainer": {"_target_": "pytorch_lightning.Trainer", "precision": "bogus"}})
    with pytest.raises(ConfigError) as caught:
        build_part("trainer", cfg.trainer)  # the key is known where the part is built: no message is parsed
    assert str(caught.value).startswith("bad setting trainer: Precision 'bogus' is invalid")
    # a config Hydra builds itself (a sweeper): the innermost reason, from the exception chain alone
    with pytest.raises(InstantiationException) as raw:
        instantiate(cfg.trainer)
    assert instantiation_message(raw.value).startswith("bad setting: Precision 'bogus' is invalid")


def test_run_hydra_turns_composition_errors_into_exit_2_and_restores_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(FULL_ERROR, raising=False)
    monkeypatch.setattr("sys.argv", ["cdvd-train"])

    def bad_override() -> None:
        compose_train(["dataset=gopro"])

    with pytest.raises(SystemExit) as exited:
        run_hydra(bad_override, "cdvd-train")
    assert exited.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("cdvd-train: error: unknown setting dataset (did you mean data?)") and err.count("\n") == 1
    assert FULL_ERROR not in os.environ

    def bug() -> None:
        raise RuntimeError("a bug keeps its traceback")

    with pytest.raises(RuntimeError):
        run_hydra(bug, "cdvd-train")
    assert FULL_ERROR not in os.environ


def test_the_console_scripts_report_a_typo_in_one_line(tmp_path) -> None:
    result = run_command([console_script("cdvd-deblur"), "inptu=clip.mp4", "output=out"], tmp_path)
    assert result.returncode == EXIT_USER_ERROR
    assert result.stderr == (
        "cdvd-deblur: error: unknown setting inptu (did you mean input?); "
        "`cdvd-deblur --cfg job` prints every setting\n"
    )
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_a_refused_trainer_argument_is_one_line_and_exit_2(tmp_path) -> None:
    result = run_command(
        [console_script("cdvd-train"), "experiment=smoke", "trainer.precision=bogus", f"hydra.run.dir={tmp_path}/run"],
        tmp_path,
    )
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "cdvd-train: error: bad setting trainer: Precision 'bogus' is invalid" in result.stderr
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr


def test_hydra_full_error_set_by_the_user_keeps_hydras_traceback(tmp_path) -> None:
    env_result = run_command(
        ["env", f"{FULL_ERROR}=1", console_script("cdvd-deblur"), "inptu=clip.mp4"],
        tmp_path,
    )
    assert env_result.returncode == 1
    assert "Traceback" in env_result.stderr and "ConfigCompositionException" in env_result.stderr


def test_the_console_scripts_hide_lightnings_leafspec_warning() -> None:
    """Lightning's fit builds torch's deprecated LeafSpec: a FutureWarning no user can act on, in every training."""
    import warnings

    from pytorch_lightning.utilities._pytree import _tree_flatten

    from cdvd.cli.common import hide_third_party_warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _tree_flatten(1)
    if not any("LeafSpec" in str(w.message) for w in shown):
        pytest.skip("this torch does not deprecate LeafSpec")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        hide_third_party_warnings()
        _tree_flatten(1)
        warnings.warn("an unrelated FutureWarning stays visible", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["an unrelated FutureWarning stays visible"]


@pytest.mark.slow
def test_a_target_that_does_not_exist_is_named(tmp_path) -> None:
    result = run_command(
        [
            console_script("cdvd-train"),
            "experiment=smoke",
            "optimizer._target_=torch.optim.Nope",
            f"hydra.run.dir={tmp_path}/run",
        ],
        tmp_path,
    )
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("cdvd-train: error: optimizer (torch.optim.Nope):") and "'torch.optim.Nope'" in line
    assert "HYDRA_FULL_ERROR" not in line


# -- values of the wrong type: named before any work, not a ValueError deep inside (each was a traceback)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("seed=abc", "seed=abc: not a whole number"),
        ("data.batch_size=abc", "data.batch_size=abc: not a whole number"),
        ("data.num_workers=-1", "data.num_workers=-1: must be >= 0"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5: not a whole number"),
        ("model.net.n_feat=abc", "model.net.n_feat=abc: not a whole number"),  # was a TypeError in string formatting
        ("model.net.n_feat=0", "model.net.n_feat=0: must be >= 1"),  # a RuntimeError in the first conv
        ("model.net.n_resblock=-1", "model.net.n_resblock=-1: must be >= 0"),  # trained silently
        ("model.net.corr_backend=xyz", "model.net.corr_backend=xyz"),  # a ValueError at the first forward
        ("data.clip_length=3", "data.clip_length=3: CDVD-TSP restores the centre of 5-frame clips"),
        ("loss.hem_weight=abc", "loss.hem_weight=abc: not a number"),  # a TypeError in the first step
        ("optimizer.betas=abc", "optimizer.betas=abc: not a number"),
        ("optimizer.betas=[2,3]", "optimizer (torch.optim.Adam): Invalid beta parameter at index 0: 2"),
        ("scheduler.scheduler.gamma=abc", "scheduler.scheduler.gamma=abc: not a number"),  # failed at epoch 200
        ("scheduler.interval=weekly", "scheduler.interval=weekly: expected one of epoch, step"),
        # an explicit null is not an absent key: each failed after data set-up (a TypeError traceback, or Lightning)
        ("model.flow_lr_scale=null", "model.flow_lr_scale=null: Incompatible value 'None'"),
        ("data.clip_length=null", "data.clip_length=None: not a whole number"),
        ("data.batch_size=null", "data.batch_size=None: not a whole number"),
        ("model.net.n_feat=null", "model.net.n_feat=None: not a whole number"),
        ("model.net.corr_backend=null", "model.net.corr_backend=None: expected one of"),
        ("scheduler.interval=null", "scheduler.interval=null: Incompatible value 'None'"),
    ],
)
def test_training_settings_of_the_wrong_type_are_named(override: str, named: str) -> None:
    from cdvd.errors import ConfigError
    from cdvd.training.checks import check_training_config

    check_training_config(compose_train(["experiment=smoke"]))  # the shipped settings pass
    with pytest.raises(ConfigError, match=re.escape(named)):
        check_training_config(compose_train(["experiment=smoke", override]))


def test_lr_finder_settings_are_named() -> None:
    from cdvd.errors import ConfigError
    from cdvd.settings import read_settings
    from cdvd.training.lr_finder import LrFinderSettings

    def settings(*overrides: str) -> LrFinderSettings:
        return read_settings(LrFinderSettings, compose_config("find_lr", list(overrides)).lr_finder, "lr_finder.")

    assert settings("lr_finder.num_iter=7").num_iter == 7
    for override, named in (
        ("lr_finder.num_iter=abc", "lr_finder.num_iter=abc: not a whole number"),
        ("lr_finder.num_iter=1", "lr_finder.num_iter=1: must be >= 3"),  # was a ValueError after the data set-up
        ("lr_finder.end_lr=1e-9", "lr_finder.end_lr=1e-09: must be above lr_finder.start_lr=1e-07"),
        ("lr_finder.start_lr=x", "lr_finder.start_lr=x: not a number"),
        ("lr_finder.diverge_th=0", "lr_finder.diverge_th=0: must be > 0"),
    ):
        with pytest.raises(ConfigError, match=re.escape(named)):
            settings(override)


def test_synthesis_settings_are_named_before_anything_is_written(tmp_path) -> None:
    from cdvd.data.synthetic import synthesize
    from cdvd.errors import UserError

    for settings, named in (
        ({"n_videos": "abc"}, "n_videos=abc"),
        ({"size": "abc"}, "size=abc"),
        ({"size": [64, 4]}, "size=4: must be >= 8"),
        ({"gamma": 0}, "gamma=0: must be > 0"),
        ({"noise_std": "lots"}, "noise_std=lots"),
        ({"jpeg_quality": 0}, "jpeg_quality=0"),
    ):
        with pytest.raises(UserError, match=re.escape(named)):
            synthesize(tmp_path / "out", **settings)
    assert not any(tmp_path.iterdir())


def test_export_check_settings_are_named_before_the_model_loads(tmp_path) -> None:
    from cdvd.errors import ConfigError
    from cdvd.export import plan_export as _plan

    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not read by the plan")
    base = compose_config("export", [f"checkpoint={checkpoint}", f"output={tmp_path / 'out'}"])
    _plan(base)
    for override, named in (
        ("tolerance=abc", "tolerance=abc: not a number"),
        ("check_size=[70,98]", "check_size=[70, 98]: expected [H, W], multiples of 4"),
        ("check_size=[72]", "check_size=[72]"),
    ):
        cfg = compose_config("export", [f"checkpoint={checkpoint}", f"output={tmp_path / 'out'}", override])
        with pytest.raises(ConfigError, match=re.escape(named)):
            _plan(cfg)


def test_cdvd_synth_reports_a_wrong_type_in_one_line(tmp_path) -> None:
    result = run_command([console_script("cdvd-synth"), "output=data", "n_frames=abc"], tmp_path)
    assert result.returncode == EXIT_USER_ERROR
    assert result.stderr.strip().splitlines() == [
        "cdvd-synth: error: n_frames=abc: not a whole number (e.g. n_frames=1)"
    ]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("experiment", ["smoke", "demo", "paper_dvd", "paper_gopro", "fork2021_dvd"])
@pytest.mark.parametrize(
    "extra",
    [[], ["hparams_search=lr_optuna"], ["scheduler=onecycle", "optimizer=adamw"], ["callbacks=[default,ema]"]],
)
def test_the_shipped_experiments_pass_the_setting_checks(experiment: str, extra: list[str]) -> None:
    from cdvd.training.checks import training_settings

    cfg = compose_train([f"experiment={experiment}", *extra])
    settings = training_settings(cfg)
    assert settings.data.batch_size == cfg.data.batch_size and settings.optimizer.lr == cfg.optimizer.lr


def test_the_network_refuses_sizes_and_backends_it_cannot_build() -> None:
    from cdvd.models import CDVDTSP

    for kwargs, named in (
        ({"n_feat": 0}, "n_feat=0: must be >= 1"),
        ({"n_feat": "8"}, "n_feat=8: not a whole number"),
        ({"n_feat": 8.0}, "n_feat=8.0: not a whole number"),
        ({"n_resblock": -1}, "n_resblock=-1: must be >= 0"),
        ({"corr_backend": "xyz"}, "corr_backend=xyz: expected one of auto, torch, cupy"),
    ):
        with pytest.raises(ValueError, match=re.escape(named)):
            CDVDTSP(**kwargs)


def test_a_setting_lightning_refuses_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from cdvd.cli.common import run_cli

    def task(_cfg: object) -> None:
        raise MisconfigurationException(
            "`ModelCheckpoint(monitor='val/nope')` could not find the monitored key\nin: [a]"
        )

    with pytest.raises(SystemExit) as exited:
        run_cli(task, OmegaConf.create({}), "cdvd-train")
    assert exited.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert (
        err.startswith("cdvd-train: error: bad setting: `ModelCheckpoint(monitor='val/nope')`") and err.count("\n") == 1
    )
