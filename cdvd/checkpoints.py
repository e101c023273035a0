"""Checkpoints: the original CDVD-TSP ``.pt`` files, PWC-Net's ``network-default.pytorch`` and our own ``.ckpt``.

The original key names are fixed by the published files; ours are chosen to read well. This module translates
between the two, both ways, and refuses to load anything that does not match exactly: every missing, unexpected or
mis-shaped key is listed in one :class:`CheckpointError` that names the file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cdvd.atomic import atomic_destination
from cdvd.errors import ConfigError, UserError
from cdvd.models.cdvd_tsp import CDVDTSP

logger = logging.getLogger(__name__)

_WORDS = ("One", "Two", "Thr", "Fou", "Fiv", "Six")
_WORD_TO_NUM = {w: i + 1 for i, w in enumerate(_WORDS)}
_ORIGINAL_PWC_PREFIX = "flow_net.moduleNetwork."
_OUR_PWC_PREFIX = "flow.pwc."
# original recons_net stage names -> ours
_RECONS_STAGES = {
    "inBlock": "stem",
    "encoder_first": "enc1",
    "encoder_second": "enc2",
    "decoder_second": "dec2",
    "decoder_first": "dec1",
    "outBlock": "head",
}
_RECONS_STAGES_INV = {v: k for k, v in _RECONS_STAGES.items()}
_ENCODERS = ("stem", "enc1", "enc2")
_DECODERS = ("dec2", "dec1")


# Our Lightning checkpoints store the network's constructor arguments under this key.
ARCH_KEY = "cdvd_architecture"


def architecture(model: CDVDTSP) -> dict[str, Any]:
    """The constructor arguments our checkpoints store under :data:`ARCH_KEY` (read back by :func:`load_model`)."""
    return {"n_feat": model.n_feat, "n_resblock": model.n_resblock, "residual": model.residual}


class CheckpointError(UserError):
    """A checkpoint file that cannot be loaded as asked; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------------------------------------------
# key translation


def _pwc_original_to_ours(rest: str) -> str:
    """Key inside PWC-Net (``moduleExtractor...``) -> ours inside :class:`PWCNet` (``extractor...``)."""
    m = re.fullmatch(r"moduleExtractor\.module(\w{3})\.(\d+)\.(\w+)", rest)
    if m:
        return f"extractor.stages.{_WORD_TO_NUM[m[1]] - 1}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"moduleRefiner\.moduleMain\.(\d+)\.(\w+)", rest)
    if m:
        return f"refiner.layers.{m[1]}.{m[2]}"
    m = re.fullmatch(r"module(\w{3})\.module(Upflow|Upfeat)\.(\w+)", rest)
    if m and m[1] in _WORD_TO_NUM:
        part = "upsample_flow" if m[2] == "Upflow" else "upsample_feat"
        return f"decoders.level{_WORD_TO_NUM[m[1]]}.{part}.{m[3]}"
    m = re.fullmatch(r"module(\w{3})\.module(\w{3})\.0\.(\w+)", rest)
    if m and m[1] in _WORD_TO_NUM and m[2] in _WORD_TO_NUM:
        level, index = _WORD_TO_NUM[m[1]], _WORD_TO_NUM[m[2]]
        part = "predict_flow.0" if index == 6 else f"dense.{index - 1}.0"
        return f"decoders.level{level}.{part}.{m[3]}"
    raise KeyError(rest)


def _pwc_ours_to_original(rest: str) -> str:
    m = re.fullmatch(r"extractor\.stages\.(\d+)\.(\d+)\.(\w+)", rest)
    if m:
        return f"moduleExtractor.module{_WORDS[int(m[1])]}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"refiner\.layers\.(\d+)\.(\w+)", rest)
    if m:
        return f"moduleRefiner.moduleMain.{m[1]}.{m[2]}"
    m = re.fullmatch(r"decoders\.level(\d)\.(upsample_flow|upsample_feat)\.(\w+)", rest)
    if m:
        part = "moduleUpflow" if m[2] == "upsample_flow" else "moduleUpfeat"
        return f"module{_WORDS[int(m[1]) - 1]}.{part}.{m[3]}"
    m = re.fullmatch(r"decoders\.level(\d)\.(?:dense\.(\d)|predict_flow)\.0\.(\w+)", rest)
    if m:
        index = int(m[2]) + 1 if m[2] is not None else 6
        return f"module{_WORDS[int(m[1]) - 1]}.module{_WORDS[index - 1]}.0.{m[3]}"
    raise KeyError(rest)


def _recons_original_to_ours(rest: str, n_resblock: int) -> str:
    m = re.fullmatch(r"(\w+?)\.(\d+)\.(.+)", rest)
    if not m or m[1] not in _RECONS_STAGES:
        raise KeyError(rest)
    stage, index, tail = _RECONS_STAGES[m[1]], int(m[2]), m[3]
    if stage in _ENCODERS:
        if index == 0 and tail.startswith("0."):
            return f"{stage}.conv.{tail[2:]}"
        if 1 <= index <= n_resblock:
            return f"{stage}.blocks.{index - 1}.{tail}"
    elif stage in _DECODERS:
        if index == n_resblock and tail.startswith("0."):
            return f"{stage}.upsample.{tail[2:]}"
        if index < n_resblock:
            return f"{stage}.blocks.{index}.{tail}"
    else:  # head
        if index == n_resblock:
            return f"{stage}.conv.{tail}"
        if index < n_resblock:
            return f"{stage}.blocks.{index}.{tail}"
    raise KeyError(rest)


def _recons_ours_to_original(rest: str, n_resblock: int) -> str:
    m = re.fullmatch(r"(\w+)\.(conv|upsample|blocks\.(\d+))\.(.+)", rest)
    if not m or m[1] not in _RECONS_STAGES_INV:
        raise KeyError(rest)
    stage, part, block, tail = m[1], m[2], m[3], m[4]
    original = _RECONS_STAGES_INV[stage]
    if block is not None:
        offset = 1 if stage in _ENCODERS else 0
        return f"{original}.{int(block) + offset}.{tail}"
    if stage in _ENCODERS and part == "conv":
        return f"{original}.0.0.{tail}"
    if stage in _DECODERS and part == "upsample":
        return f"{original}.{n_resblock}.0.{tail}"
    if stage == "head" and part == "conv":
        return f"{original}.{n_resblock}.{tail}"
    raise KeyError(rest)


def original_key_to_ours(key: str, n_resblock: int = 3) -> str:
    """``flow_net.moduleNetwork.moduleSix.moduleUpflow.weight`` -> ``flow.pwc.decoders.level6...``."""
    if key.startswith(_ORIGINAL_PWC_PREFIX):
        return _OUR_PWC_PREFIX + _pwc_original_to_ours(key[len(_ORIGINAL_PWC_PREFIX) :])
    if key.startswith("recons_net."):
        return "recons." + _recons_original_to_ours(key[len("recons_net.") :], n_resblock)
    raise KeyError(key)


def our_key_to_original(key: str, n_resblock: int = 3) -> str:
    """Inverse of :func:`original_key_to_ours`."""
    if key.startswith(_OUR_PWC_PREFIX):
        return _ORIGINAL_PWC_PREFIX + _pwc_ours_to_original(key[len(_OUR_PWC_PREFIX) :])
    if key.startswith("recons."):
        return "recons_net." + _recons_ours_to_original(key[len("recons.") :], n_resblock)
    raise KeyError(key)


def _translate_keys(state: Mapping[str, torch.Tensor], translate: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """``state`` with each key (``module.`` prefix dropped) translated; a key that does not translate is kept under
    its original name, so that the strict load that follows reports it as unexpected."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        try:
            out[translate(key)] = value
        except KeyError:
            out[key] = value
    return out


def original_to_ours(state: Mapping[str, torch.Tensor], n_resblock: int = 3) -> dict[str, torch.Tensor]:
    """Translate an original CDVD-TSP state dict (``module.`` prefix allowed) to our key names."""
    return _translate_keys(state, lambda key: original_key_to_ours(key, n_resblock))


def ours_to_original(state: Mapping[str, torch.Tensor], n_resblock: int = 3) -> dict[str, torch.Tensor]:
    """Translate our state dict to the original CDVD-TSP key names (loadable by the original code)."""
    return {our_key_to_original(k, n_resblock): v for k, v in state.items()}


def pwc_file_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Translate ``network-default.pytorch`` (``module*`` or newer ``net*`` spelling) to keys of :class:`PWCNet`."""
    return _translate_keys(state, lambda key: _pwc_original_to_ours(re.sub(r"(^|\.)net(?=[A-Z])", r"\1module", key)))


# ----------------------------------------------------------------------------------------------------------------
# reading files


def _first_line(err: BaseException) -> str:
    """``Type: what went wrong``, short: torch's unpickling errors run to a dozen lines and open with advice to
    load the file with ``weights_only=False`` (running whatever it holds), which is not ours to give."""
    text = str(err).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:  # the detail sits between the advice and a pointer to the documentation
        detail = " ".join(text.split(marker, 1)[1].split("Check the documentation", 1)[0].split())
        if detail:
            return f"{type(err).__name__}: {detail}"
    lines = text.splitlines()
    first = lines[0].strip().split(". ")[0] if lines else ""
    return f"{type(err).__name__}: {first}".rstrip(": ")


def given_checkpoint(value: str | os.PathLike | None) -> Path:
    """The ``checkpoint`` setting as a path, else a ConfigError (that the file is there: :func:`safe_torch_load`)."""
    if not value:
        raise ConfigError("no checkpoint given: pass checkpoint=PATH (an original CDVD-TSP .pt or a cdvd .ckpt)")
    return Path(value)


def _unsafe_globals(path: Path) -> list[str] | None:
    """The classes and functions a checkpoint's pickle names beyond what ``weights_only`` allows, read statically
    (nothing runs); ``None`` where torch cannot tell (before 2.5, or a file not in its zip format)."""
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return None
    try:
        return list(finder(path))
    except Exception:  # noqa: BLE001 - a truncated or foreign file: the load's own error says why
        return None


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, never arbitrary objects.

    A file that such a load refuses (a pickle of other objects, a truncated or foreign file) is never read any
    other way: it is refused with one line that names it.

    Raises:
        CheckpointError: the file is missing or holds more than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (pass checkpoint=PATH of an existing .pt/.ckpt file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch's unpickler fails in many ways on foreign files
        named = _unsafe_globals(path)
        if named is None:  # torch cannot list them (before 2.5, or not its zip format): its message is all there is
            named = ["?"] if "unsupported global" in str(err).lower() else []
        if named:  # a pickle that names a class or function (a crafted payload, or objects): nothing in it has run
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain data ({', '.join(named[:3])}) and cannot be "
                "loaded safely: refused (only checkpoints of plain data are read)"
            ) from err
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, damaged or not a PyTorch file: {_first_line(err)})"
        ) from err


def _tensor_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def strict_load(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load ``state`` into ``module`` requiring the same keys and shapes; one error lists every mismatch."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshaped:
        lines = [f"{path} does not match the model:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {len(items)} {title} key(s): " + ", ".join(items))
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state, strict=True)


def _is_original(state: Mapping[str, Any]) -> bool:
    return any(k.removeprefix("module.").startswith(("flow_net.", "recons_net.")) for k in state)


def _infer_recons_size(state: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(n_feat, n_resblock) of a state dict in our key names."""
    try:
        n_feat = int(state["recons.stem.conv.weight"].shape[0])
    except KeyError:
        return 32, 3
    blocks = {int(m[1]) for k in state if (m := re.match(r"recons\.stem\.blocks\.(\d+)\.", k))}
    return n_feat, len(blocks)


def _infer_original_resblocks(state: Mapping[str, torch.Tensor]) -> int:
    blocks = {
        int(m[1]) for k in state if (m := re.match(r"(?:module\.)?recons_net\.inBlock\.(\d+)\.conv1\.weight$", k))
    }
    return len(blocks) if blocks else 3


def read_network_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read the network weights of any supported checkpoint, in our key names.

    Returns:
        ``(state, architecture, source)``: the state dict for :class:`CDVDTSP`; the constructor arguments read off
        the file (``n_feat``, ``n_resblock`` from the tensor shapes, ``residual`` where our checkpoint stored it);
        and ``"original CDVD-TSP"`` or ``"cdvd"``.
    """
    path = Path(path)
    obj = safe_torch_load(path)
    stored: Mapping[str, Any] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        stored = obj.get(ARCH_KEY) or {}
        raw = obj["state_dict"]
        # our LightningModule holds the network as `net`; anything else it keeps is not the network's
        state = {k[len("net.") :]: v for k, v in raw.items() if k.startswith("net.")}
        if not state:
            state = _tensor_dict(raw, path)
    else:
        state = _tensor_dict(obj, path)

    if _is_original(state):
        state = original_to_ours(state, _infer_original_resblocks(state))
        source = "original CDVD-TSP"
    else:
        source = "cdvd"
    n_feat, n_resblock = _infer_recons_size(state)
    return state, {"n_feat": n_feat, "n_resblock": n_resblock, "residual": bool(stored.get("residual", False))}, source


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    corr_backend: str = "auto",
) -> CDVDTSP:
    """Load a CDVD-TSP network in eval mode from an original ``.pt``, our Lightning ``.ckpt`` or our state dict.

    The architecture (``n_feat``, ``n_resblock``, ``residual``) is taken from the file: an original file is read
    off the tensor shapes, our Lightning checkpoint also stores its constructor arguments.

    Raises:
        CheckpointError: the file is missing, not a checkpoint, or its keys/shapes do not match the network.
    """
    state, arch, source = read_network_state(path)
    model = CDVDTSP(corr_backend=corr_backend, **arch)
    strict_load(model, state, path)
    logger.info("loaded %s checkpoint %s (n_feat=%d, n_resblock=%d)", source, path, model.n_feat, model.n_resblock)
    return model.to(device).eval()


def load_weights(model: CDVDTSP, path: str | os.PathLike) -> None:
    """Load the weights of any supported checkpoint into an existing ``model`` (strict: keys and shapes)."""
    state, _, source = read_network_state(path)
    strict_load(model, state, path)
    logger.info("initialised the network from %s checkpoint %s", source, path)


def load_flow_weights(model: CDVDTSP, path: str | os.PathLike) -> None:
    """Load PWC-Net's ``network-default.pytorch`` (either key spelling) into ``model``'s flow net."""
    path = Path(path)
    state = _tensor_dict(safe_torch_load(path), path)
    strict_load(model.flow.pwc, pwc_file_to_ours(state), path)
    logger.info("loaded PWC-Net weights %s", path)


def save_original(model: CDVDTSP, path: str | os.PathLike) -> None:
    """Write ``model``'s weights with the original CDVD-TSP key names (runs in the original code)."""
    path = Path(path)
    state = ours_to_original({k: v.detach().cpu() for k, v in model.state_dict().items()}, model.n_resblock)
    atomic_torch_save(state, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: no half-written file on a crash.

    Partial files of writers killed earlier in the same folder are removed first.
    """
    with atomic_destination(path, clean_stale=True) as tmp:
        torch.save(obj, tmp)
