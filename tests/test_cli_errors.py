"""A command line Hydra cannot compose, or a config whose class refuses its arguments, ends as one line and exit 2."""

from __future__ import annotations

import os

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cdvd.cli.common import EXIT_USER_ERROR, FULL_ERROR, hydra_message, instantiation_message, run_hydra
from tests.helpers.cli import compose_train, console_script, run_command


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
    cfg = OmegaConf.create({"trainer": {"_target_": "pytorch_lightning.Trainer", "precision": "bogus"}})
    with pytest.raises(InstantiationException) as caught:
        instantiate(cfg.trainer)
    message = instantiation_message(caught.value)
    assert message.startswith("bad setting trainer: Precision 'bogus' is invalid")


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
    assert line.startswith("cdvd-train: error: bad setting model:") and "'torch.optim.Nope'" in line
    assert "HYDRA_FULL_ERROR" not in line
