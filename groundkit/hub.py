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
