"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

Two kinds of files:

- a **model checkpoint** (what ``Grounder`` and ``groundkit evaluate`` load): ``model.safetensors``
  (the weights) and ``config.json`` beside it (model type, config, metadata). The same JSON is
  also stored in the safetensors header, so the weights file alone is self-describing and is what
  :func:`load_checkpoint` reads; ``config.json`` is the copy for people and other tools.
- a **training state** (what ``Trainer(resume=True)`` loads): one ``train_state.safetensors``
  holding every tensor of a nested state (model, optimizer moments, ...) and, in its header, the
  JSON of the structure and scalars (step counters, epoch, RNG states). One file means one atomic
  rename, so a crash can never pair the weights of one step with the optimizer of another.

Every file is written through :func:`groundkit._io.atomic_path`: flushed to the disk, then renamed
over the old one, so a kill, a full disk or a power loss leaves the previous file whole; a full
disk is a :class:`~groundkit.errors.WriteError` naming the file. A kill mid-write leaves a
temporary ``.NAME.XXXXXXXX.tmp.safetensors`` beside it, which the trainer removes when it next
starts or saves.
"""
from __future__ import annotations

import errno
import json
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from groundkit import __version__
from groundkit._io import atomic_path, write_failure, write_json
from groundkit.errors import ConfigError, FormatError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TRAIN_STATE_NAME = "train_state.safetensors"
_HEADER_KEY = "groundkit"  # safetensors metadata key holding our JSON


def checkpoint_paths(dir_or_path: str | Path) -> tuple[Path, Path]:
    """``(weights, json)`` paths: a directory holds ``model.safetensors`` + ``config.json``;
    a file ``x.safetensors`` gets ``x.json`` beside it."""
    path = Path(dir_or_path)
    if path.suffix != ".safetensors":
        return path / WEIGHTS_NAME, path / CONFIG_NAME
    return path, path.with_name(CONFIG_NAME if path.name == WEIGHTS_NAME else path.stem + ".json")


def save_checkpoint(dir_or_path: str | Path, model: torch.nn.Module | Mapping[str, torch.Tensor],
                    config_dict: Mapping[str, Any], model_type: str,
                    extra_meta: Mapping[str, Any] | None = None) -> Path:
    """Write the weights of ``model`` (a module or a state dict) and their description.

    Args:
        dir_or_path: a directory, or a ``.safetensors`` file path (see :func:`checkpoint_paths`).
        config_dict: the JSON-ready config that rebuilds the model (``config_to_dict(cfg)``).
        model_type: the builder name (``"ppmn"``); loading as another type is an error.
        extra_meta: JSON-ready facts to keep (epoch, step, eval metrics, ...).
    Returns:
        the weights path.
    """
    weights, json_path = checkpoint_paths(dir_or_path)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    meta = {"format": "groundkit-checkpoint", "model_type": model_type,
            "config": dict(config_dict), "meta": dict(extra_meta or {}),
            "groundkit_version": __version__, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _write_safetensors(weights, dict(state), meta)
    write_json(json_path, meta, indent=2)
    return weights


def load_checkpoint(dir_or_path: str | Path, expected_model_type: str | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model checkpoint written by :func:`save_checkpoint`; tensors on CPU.

    Returns:
        ``(state_dict, meta)`` with ``meta = {"model_type", "config", "meta", ...}`` (``{}`` for a
        plain safetensors file from elsewhere).
    Raises:
        ConfigError: no such file, or a model type other than ``expected_model_type``.
        FormatError: the file is not a valid safetensors file.
    """
    weights, _ = checkpoint_paths(dir_or_path)
    tensors, meta = _read_safetensors(weights)
    found = meta.get("model_type")
    if expected_model_type is not None and found != expected_model_type:
        what = f"is a {found!r} model" if found else "has no model type"
        raise ConfigError(f"{weights}: checkpoint {what}, expected a {expected_model_type!r} "
                          "model")
    return tensors, meta


def load_initial_weights(model: torch.nn.Module, source: str | Path, model_type: str,
                         model_config: Mapping[str, Any] | None = None) -> None:
    """Fine-tuning's start: copy the weights of the checkpoint ``source`` (folder, file or
    bundled name) into ``model``, nothing else (no optimizer, schedule or counters: that is a
    training state's job). The checkpoint must be of ``model_type`` and hold exactly the
    model's keys at its shapes, but for the part of a text encoder it was trained with frozen
    (hence left out) and this run trains (:func:`frozen_text_keys`). ``model_config`` (this run's,
    JSON-ready): when the weights do not fit, the error also names the settings where the
    checkpoint's model config differs.

    Raises:
        ConfigError: no such checkpoint, another model type, or keys that do not fit (listed).
    """
    from groundkit.hub import resolve_checkpoint  # the package's bundled names

    what = f"trainer.init_from={str(source)!r}"
    state, meta = load_checkpoint(resolve_checkpoint(source))
    found = meta.get("model_type")
    if found != model_type:
        kind = f"a {found!r} checkpoint" if found else "a checkpoint without a model type"
        raise ConfigError(f"{what}: {kind}; this run trains a {model_type!r} model, and "
                          f"fine-tuning starts from weights of the same model type")
    expected, theirs = model.state_dict(), meta.get("config", {}).get("model", {})
    installed = frozen_text_keys(expected, state, theirs, model_config)
    problems = state_mismatches({k: v for k, v in expected.items() if k not in installed}, state)
    if problems and model_config is not None:
        differences = config_differences(theirs, model_config)
        problems.append("the checkpoint's model config differs: " + ", ".join(differences))
    if problems:
        raise ConfigError(f"{what}: its weights do not fit this {model_type!r} model (is the "
                          f"model config the checkpoint's?): " + "; ".join(problems))
    model.load_state_dict(state, strict=not installed)


def frozen_text_keys(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                     theirs: Mapping[str, Any], ours: Mapping[str, Any] | None) -> set[str]:
    """The text encoder's keys a checkpoint trained with it frozen, or with only its top layers
    trained (``text_train_layers``), left out (``text.encoder.leave_out_of_checkpoints``), when
    this run trains the same encoder: the model already holds them, loaded from the installed
    encoder the checkpoint was trained with, so fine-tuning it from there is well defined (the
    layers the checkpoint did train must still fit). Adapters this run adds
    (``text_adapter_rank``) are among them: they start at zero, so the model computes what the
    checkpoint did. ``set()`` in every other case."""
    left_out = theirs.get("freeze_text") or theirs.get("text_train_layers")
    if (ours is None or not left_out or ours.get("freeze_text", True)
            or theirs.get("text_encoder") != ours.get("text_encoder")):
        return set()
    return {k for k in expected if k.startswith("text_encoder.") and k not in found}


def state_mismatches(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                     limit: int = 8) -> list[str]:
    """What keeps ``found`` from loading where ``expected`` is: missing and unexpected keys and
    shape mismatches, at most ``limit`` names each (and how many more); ``[]`` when it fits."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in found and found[k].shape != v.shape]
    return [f"{title} ({len(names)}): {', '.join(names[:limit])}"
            + (f", ... {len(names) - limit} more" if len(names) > limit else "")
            for title, names in [("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shapes (checkpoint vs model)", shapes)] if names]


def config_differences(theirs: Mapping[str, Any], ours: Mapping[str, Any], prefix: str = "model."
                       ) -> list[str]:
    """``key=their value (here: our value)`` for every setting of two nested config dicts that
    differs, as overrides that would make ours theirs; a key their (older) config lacks says so."""
    out = []
    for key in sorted({*theirs, *ours}):
        mine, other = ours.get(key), theirs.get(key)
        if isinstance(mine, Mapping) and isinstance(other, Mapping):
            out += config_differences(other, mine, f"{prefix}{key}.")
        elif key not in theirs:
            out.append(f"{prefix}{key} not in the checkpoint's config (here: {json.dumps(mine)})")
        elif mine != other:
            out.append(f"{prefix}{key}={json.dumps(other)} (here: {json.dumps(mine)})")
    return out


def save_train_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write a nested state (dicts, lists, tuples, scalars, tensors) to one safetensors file.

    Tensors go to the tensor section under their path (``optimizer/state/3/exp_avg``); the rest
    is kept as JSON, with markers for tuples and non-string dict keys so that
    ``load_train_state`` returns an equal structure (``optimizer.state_dict()`` has int keys).
    """
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(dict(state), "", tensors)
    _write_safetensors(Path(path), tensors, {"format": "groundkit-train-state",
                                             "state": structure})


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read what :func:`save_train_state` wrote (tensors on CPU)."""
    tensors, meta = _read_safetensors(Path(path))
    if meta.get("format") != "groundkit-train-state":
        raise FormatError(path, "not a groundkit training state (no 'groundkit-train-state' "
                                "header)")
    return _decode(meta["state"], tensors)


# ----------------------------------------------------------------------------- RNG states


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy and torch (and this CUDA device): plain data and
    uint8 tensors, storable by :func:`save_train_state`."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    state = {"python": random.getstate(), "numpy": np_state,
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = {**state["numpy"], "state": dict(state["numpy"]["state"])}
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------- safetensors I/O


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write atomically; a failure (a full disk) is a WriteError and the old file stays."""
    with atomic_path(path) as tmp:
        try:
            save_file(_storable(tensors), str(tmp), metadata={_HEADER_KEY: json.dumps(meta)})
        except SafetensorError as e:  # I/O errors come as "IoError(Os { code: 28, ... })"
            disk_full = "code: 28," in str(e) or "StorageFull" in str(e)
            reason = "no space left on device" if disk_full else f"safetensors: {e}"
            raise write_failure(path, reason, errno.ENOSPC if disk_full else None) from e


def checkpoint_meta(dir_or_path: str | Path) -> dict[str, Any]:
    """The ``meta`` of :func:`load_checkpoint` without reading the tensors."""
    return _read_safetensors(checkpoint_paths(dir_or_path)[0], with_tensors=False)[1]


def _read_safetensors(path: Path, with_tensors: bool = True
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(_HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError) as e:
        raise FormatError(path, f"not a readable safetensors file: {e}") from None
    try:
        return tensors, json.loads(header) if header else {}
    except json.JSONDecodeError as e:
        raise FormatError(path, f"header '{_HEADER_KEY}' is not valid JSON: {e}") from None


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two tensors sharing memory (safetensors refuses tied weights)."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[name] = t
    return out


# ----------------------------------------------------------------------------- nested states


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-ready copy of ``obj``; tensors are moved to ``tensors`` and replaced by markers."""
    if isinstance(obj, torch.Tensor):
        if path in tensors:
            raise ValueError(f"training state: two tensors at path '{path}'")
        tensors[path] = obj
        return {"__tensor__": path}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        items = [(k, _encode(v, f"{path}/{k}".lstrip("/"), tensors)) for k, v in obj.items()]
        if all(isinstance(k, str) for k, _ in items):
            return dict(items)
        return {"__items__": [[k, v] for k, v in items]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state at '{path}': cannot store a {type(obj).__name__}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}
