"""Checkpoints by name: the ones bundled with the package, or any path on disk."""
from __future__ import annotations

from pathlib import Path

from groundkit.errors import ConfigError

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def bundled_names() -> list[str]:
    """Names of the checkpoints shipped inside the package (``ppmn-synthetic``, ...)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A checkpoint path (file, or folder with ``model.safetensors``) or a bundled name -> path."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = PRETRAINED_DIR / f"{name_or_path}.safetensors"
    if bundled.exists():
        return bundled
    raise ConfigError(f"no checkpoint {str(name_or_path)!r}: not a file or folder, and not a bundled "
                      f"name (bundled: {', '.join(bundled_names()) or 'none'}). Nothing is "
                      f"downloaded: train one with `groundkit train` and pass its folder.")


def resolve_weights_file(name_or_path: str | Path) -> Path:
    """Like :func:`resolve_checkpoint`, but a checkpoint folder gives its ``model.safetensors``."""
    path = resolve_checkpoint(name_or_path)
    return path / "model.safetensors" if path.is_dir() else path


def checkpoint_header(name_or_path: str | Path) -> dict:
    """The description a groundkit checkpoint carries in its weights file (``model_type``,
    ``config``, ...; what ``engine.checkpoint.load_checkpoint`` returns as ``meta``), read without
    its tensors: for models that load another model's checkpoint as a part (a layer below the
    engine). ``{}`` for a plain safetensors file; FormatError for an unreadable one."""
    import json

    from safetensors import safe_open

    from groundkit.errors import FormatError

    path = resolve_weights_file(name_or_path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get("groundkit")  # engine.checkpoint's header key
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise FormatError(path, f"not a readable safetensors file: {e}") from None
    try:
        return json.loads(header) if header else {}
    except json.JSONDecodeError as e:
        raise FormatError(path, f"header 'groundkit' is not valid JSON: {e}") from None


# ----------------------------------------------------------------------------- model cards
# What a checkpoint is, kept in its header beside the epoch, step and metrics (``meta``): the
# data it was trained on, the input size it expects, and its scores. ``trained_on["data"]`` is
# ``"synthetic"`` for a model that knows only the synthetic benchmark; the predictors then warn
# once when given an image unlike it (``groundkit.api``). docs/models.md describes the fields.

CARD_KEYS = ("trained_on", "input_size", "scores")


def model_card(header: dict) -> dict:
    """``{"trained_on", "input_size", "scores"}`` of a checkpoint header (what
    :func:`checkpoint_header` returns), those it has; ``{}`` for a checkpoint without a card."""
    meta = header.get("meta") or {}
    return {key: meta[key] for key in CARD_KEYS if key in meta}


def synthetic_only(header: dict) -> bool:
    """True when the checkpoint says it was trained on the synthetic benchmark only."""
    return (model_card(header).get("trained_on") or {}).get("data") == "synthetic"


def write_model_card(name_or_path: str | Path, trained_on: dict, input_size: int | str,
                     scores: dict) -> Path:
    """Write a model card into a checkpoint's header and into the JSON beside it.

    ``trained_on``: at least ``data`` (``"synthetic"`` or what else) and a ``description``; for
    the synthetic benchmark also ``image_size`` (px) and ``images`` or ``sentences``.
    ``input_size``: the side the model's inputs are sized to (px). ``scores``: ``metric`` and
    its values (percent) per split, e.g. ``{"metric": "AR", "val": 72.9, "unseen_seed_7": 73.3}``.

    The tensors are written back unchanged and read again to check that they are bit for bit
    the same (a RuntimeError otherwise, before anything is replaced); the file is replaced
    atomically. Returns the weights file.
    """
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from groundkit._io import atomic_path, write_json
    from groundkit.errors import FormatError

    path = resolve_weights_file(name_or_path)
    header = checkpoint_header(path)
    if header.get("format") != "groundkit-checkpoint":
        raise FormatError(path, "not a groundkit model checkpoint (no 'groundkit-checkpoint' "
                                "header): nothing to describe")
    if "data" not in trained_on:
        raise ValueError("trained_on: expected a 'data' key (e.g. 'synthetic')")
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    tensors = load_file(str(path))
    header["meta"] = {**(header.get("meta") or {}), "trained_on": dict(trained_on),
                      "input_size": input_size, "scores": dict(scores)}
    metadata["groundkit"] = json.dumps(header)

    def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
        return (a.dtype == b.dtype and a.shape == b.shape and
                torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        written = load_file(str(tmp))
        if written.keys() != tensors.keys() or not all(
                same_bits(tensors[k], written[k]) for k in tensors):
            raise RuntimeError(f"{path}: the rewritten tensors differ; the file is unchanged")
    json_path = path.with_name("config.json" if path.name == "model.safetensors"
                               else f"{path.stem}.json")
    write_json(json_path, header, indent=2)
    return path
