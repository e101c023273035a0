"""Checkpoint key mapping, the loaders for every supported file, and their errors."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
from helpers.reference import reference_state_dict

import cdvd
from cdvd.checkpoints import (
    ARCH_KEY,
    CheckpointError,
    original_key_to_ours,
    original_to_ours,
    ours_to_original,
    safe_torch_load,
)
from cdvd.models import CDVDTSP

PWC_PREFIX = "flow_net.moduleNetwork."


@pytest.fixture(scope="module")
def original_state() -> dict[str, torch.Tensor]:
    """The reference case's original-format state dict (210 keys, original order)."""
    return reference_state_dict()


def _small_model(seed: int = 0) -> CDVDTSP:
    torch.manual_seed(seed)
    return CDVDTSP(n_feat=8, n_resblock=1)


def _assert_same_state(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        assert torch.equal(got[key], value), key


# ------------------------------------------------------------------------------------------------------------
# key mapping


def test_original_keys_round_trip(original_state: dict[str, torch.Tensor]) -> None:
    ours = original_to_ours(original_state)
    assert len(ours) == len(original_state) == 210
    assert set(ours) == set(CDVDTSP().state_dict())
    back = ours_to_original(ours)
    assert list(back) == list(original_state)  # same keys, same order
    _assert_same_state(back, original_state)
    for key in original_state:
        assert back[key] is original_state[key]  # the mapping renames, it never copies


def test_small_model_keys_round_trip() -> None:
    state = _small_model().state_dict()
    original = ours_to_original(state, n_resblock=1)
    assert all(k.startswith((PWC_PREFIX, "recons_net.")) for k in original)
    assert "recons_net.outBlock.1.weight" in original  # the final conv follows the single resblock
    _assert_same_state(original_to_ours(original, n_resblock=1), state)


def test_data_parallel_prefix_is_dropped(original_state: dict[str, torch.Tensor]) -> None:
    prefixed = {"module." + k: v for k, v in original_state.items()}
    _assert_same_state(original_to_ours(prefixed), original_to_ours(original_state))


@pytest.mark.parametrize(
    ("original", "ours"),
    [
        (PWC_PREFIX + "moduleExtractor.moduleOne.0.weight", "flow.pwc.extractor.stages.0.0.weight"),
        (PWC_PREFIX + "moduleSix.moduleOne.0.bias", "flow.pwc.decoders.level6.dense.0.0.bias"),
        (PWC_PREFIX + "moduleTwo.moduleSix.0.weight", "flow.pwc.decoders.level2.predict_flow.0.weight"),
        (PWC_PREFIX + "moduleFiv.moduleUpfeat.weight", "flow.pwc.decoders.level5.upsample_feat.weight"),
        (PWC_PREFIX + "moduleRefiner.moduleMain.12.bias", "flow.pwc.refiner.layers.12.bias"),
        ("recons_net.inBlock.0.0.weight", "recons.stem.conv.weight"),
        ("recons_net.encoder_second.3.conv2.bias", "recons.enc2.blocks.2.conv2.bias"),
        ("recons_net.decoder_first.3.0.weight", "recons.dec1.upsample.weight"),
        ("recons_net.outBlock.3.weight", "recons.head.conv.weight"),
    ],
)
def test_known_key_names(original: str, ours: str) -> None:
    assert original_key_to_ours(original) == ours


# ------------------------------------------------------------------------------------------------------------
# loading and saving


def test_save_original_then_load_model(tmp_path: Path) -> None:
    model = _small_model()
    path = tmp_path / "nested" / "small.pt"
    cdvd.save_original(model, path)
    saved = torch.load(path, weights_only=True)
    assert all(k.startswith((PWC_PREFIX, "recons_net.")) for k in saved)
    loaded = cdvd.load_model(path)
    assert (loaded.n_feat, loaded.n_resblock, loaded.residual) == (8, 1, False)
    assert not loaded.training
    _assert_same_state(loaded.state_dict(), model.state_dict())


@pytest.mark.parametrize(("n_feat", "n_resblock"), [(8, 1), (4, 2), (32, 3)])
def test_load_model_infers_architecture(tmp_path: Path, n_feat: int, n_resblock: int) -> None:
    torch.manual_seed(0)
    model = CDVDTSP(n_feat=n_feat, n_resblock=n_resblock)
    path = tmp_path / "model.pt"
    torch.save(ours_to_original(model.state_dict(), n_resblock), path)
    loaded = cdvd.load_model(path)
    assert (loaded.n_feat, loaded.n_resblock) == (n_feat, n_resblock)
    _assert_same_state(loaded.state_dict(), model.state_dict())


def test_load_weights_into_existing_model(tmp_path: Path) -> None:
    source, target = _small_model(0), _small_model(1)
    path = tmp_path / "small.pt"
    cdvd.save_original(source, path)
    cdvd.load_weights(target, path)
    _assert_same_state(target.state_dict(), source.state_dict())


@pytest.mark.parametrize("spelling", ["module", "net"])
def test_load_flow_weights(tmp_path: Path, original_state: dict[str, torch.Tensor], spelling: str) -> None:
    """``network-default.pytorch``: PWC-Net tensors without ``flow_net.moduleNetwork.``, old or new names."""
    pwc_file = {k.removeprefix(PWC_PREFIX): v for k, v in original_state.items() if k.startswith(PWC_PREFIX)}
    if spelling == "net":
        pwc_file = {re.sub(r"(^|\.)module(?=[A-Z])", r"\1net", k): v for k, v in pwc_file.items()}
        assert "netExtractor.netOne.0.weight" in pwc_file
        assert "netRefiner.netMain.0.weight" in pwc_file
    else:
        assert "moduleExtractor.moduleOne.0.weight" in pwc_file
    path = tmp_path / "network-default.pytorch"
    torch.save(pwc_file, path)

    model = CDVDTSP(n_feat=4, n_resblock=1)
    recons_before = {k: v.clone() for k, v in model.recons.state_dict().items()}
    cdvd.load_flow_weights(model, path)

    expected = {
        k.removeprefix("flow.pwc."): v for k, v in original_to_ours(original_state).items() if k.startswith("flow.")
    }
    _assert_same_state(model.flow.pwc.state_dict(), expected)
    _assert_same_state(model.recons.state_dict(), recons_before)  # untouched


def test_lightning_checkpoint_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CDVDTSP(n_feat=4, n_resblock=2, residual=True)
    checkpoint = {
        "epoch": 3,
        "global_step": 42,
        "state_dict": {"net." + k: v for k, v in model.state_dict().items()},
        ARCH_KEY: {"n_feat": 4, "n_resblock": 2, "residual": True},
        "hyper_parameters": {"lr": 1e-4},
    }
    path = tmp_path / "epoch=3.ckpt"
    torch.save(checkpoint, path)
    loaded = cdvd.load_model(path)
    assert (loaded.n_feat, loaded.n_resblock, loaded.residual) == (4, 2, True)
    _assert_same_state(loaded.state_dict(), model.state_dict())

    checkpoint[ARCH_KEY] = {"n_feat": 4, "n_resblock": 2, "residual": False}
    torch.save(checkpoint, path)
    assert cdvd.load_model(path).residual is False


# ------------------------------------------------------------------------------------------------------------
# errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "no_such_checkpoint.pt"
    with pytest.raises(CheckpointError, match="not found") as info:
        cdvd.load_model(path)
    assert str(path) in str(info.value)
    assert "pass" in str(info.value)  # says what to give instead
    with pytest.raises(CheckpointError, match="not found"):
        cdvd.load_flow_weights(CDVDTSP(n_feat=4, n_resblock=1), path)


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".pytorch"])
@pytest.mark.parametrize(
    "content",
    # seeds picked so that torch's unpickler fails in different ways (UnpicklingError, IndexError, KeyError)
    [b"this is a text file, not weights\n", b"", b"PK\x03\x04 not a zip"]
    + [random.Random(seed).randbytes(256) for seed in (0, 2, 20, 195)],
    ids=["text", "empty", "zip-magic", "bytes-0", "bytes-2", "bytes-20", "bytes-195"],
)
def test_file_that_is_not_a_checkpoint(tmp_path: Path, suffix: str, content: bytes) -> None:
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        cdvd.load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "obj",
    [torch.zeros(3), [torch.zeros(3)], {}, {"weight": 1.0}],
    ids=["tensor", "list", "empty", "no-tensors"],
)
def test_pickle_without_state_dict(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="state dict") as info:
        cdvd.load_model(path)
    assert str(path) in str(info.value)


def test_mismatched_keys_are_all_listed(tmp_path: Path, original_state: dict[str, torch.Tensor]) -> None:
    state = dict(original_state)
    missing = PWC_PREFIX + "moduleThr.moduleUpfeat.bias"
    misshaped = PWC_PREFIX + "moduleRefiner.moduleMain.12.weight"
    unexpected = "recons_net.inBlock.0.extra.weight"
    del state[missing]
    state[misshaped] = torch.zeros(3, 32, 3, 3)
    state[unexpected] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)

    with pytest.raises(CheckpointError) as info:
        cdvd.load_model(path)
    message = str(info.value)
    assert str(path) in message
    for key in (missing, misshaped, unexpected):
        ours = original_key_to_ours(key) if key != unexpected else key
        assert key in message or ours in message, f"{key} not reported: {message}"
    assert "missing" in message and "unexpected" in message and "mis-shaped" in message
    assert "(3, 32, 3, 3)" in message and "(2, 32, 3, 3)" in message


@pytest.mark.parametrize(
    "change",
    ["missing", "unexpected", "misshaped"],
)
def test_each_mismatch_alone_fails(tmp_path: Path, change: str) -> None:
    model = _small_model()
    state = ours_to_original(model.state_dict(), n_resblock=1)
    key = "recons_net.outBlock.1.bias"
    if change == "missing":
        del state[key]
    elif change == "unexpected":
        state["recons_net.outBlock.7.bias"] = torch.zeros(3)
    else:
        state[key] = torch.zeros(4)
    path = tmp_path / f"{change}.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        cdvd.load_model(path)


def test_flow_file_with_wrong_keys(tmp_path: Path, original_state: dict[str, torch.Tensor]) -> None:
    pwc_file = {k.removeprefix(PWC_PREFIX): v for k, v in original_state.items() if k.startswith(PWC_PREFIX)}
    del pwc_file["moduleTwo.moduleSix.0.bias"]
    path = tmp_path / "network-default.pytorch"
    torch.save(pwc_file, path)
    with pytest.raises(CheckpointError, match="missing") as info:
        cdvd.load_flow_weights(CDVDTSP(n_feat=4, n_resblock=1), path)
    assert str(path) in str(info.value)


def test_an_unreadable_checkpoint_is_named_without_torchs_advice_to_load_it_unsafely(tmp_path) -> None:
    """torch's message for a foreign file opens with "Re-running torch.load with weights_only set to False will
    likely succeed": advice that runs whatever the file holds. The user gets the file and what is wrong."""
    foreign = tmp_path / "notes.pt"
    foreign.write_bytes(b"x")
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.arange(5000.0)}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:3000])
    for path, reason in ((foreign, "Unsupported operand"), (truncated, "failed reading zip archive")):
        with pytest.raises(CheckpointError) as caught:
            safe_torch_load(path)
        message = str(caught.value)
        assert message.startswith(f"{path} is not a readable checkpoint") and reason in message
        assert "weights_only" not in message and "\n" not in message and len(message) < 300
