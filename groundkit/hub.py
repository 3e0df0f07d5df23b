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
