"""The models that ship inside the package (``geosr/weights/``): finding them by name, and the default per scale."""

from __future__ import annotations

import os
from pathlib import Path

from geosr.errors import ModelFileError

BUNDLED_DIR = Path(__file__).parent / "weights"


def bundled_models() -> dict[str, Path]:
    """The model files that ship inside the package, by name (file name without .safetensors)."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.safetensors"))}


def default_model_name(scale: int) -> str:
    """The name of the bundled model ``geosr upscale`` and ``geosr evaluate`` use for ``scale`` without --model."""
    return f"degan-x{scale}"


def default_model(scale: int) -> Path:
    """The bundled default model for ``scale``; raises ModelFileError when none ships."""
    models = bundled_models()
    name = default_model_name(scale)
    if name not in models:
        raise ModelFileError(
            f"no bundled model for x{scale} ships with this version of geosr; pass --model PATH "
            "(a .safetensors model file from geosr train)"
        )
    return models[name]


def resolve_model(spec: str | os.PathLike) -> Path:
    """A model file path for ``spec``: an existing path, or the name of a bundled model (e.g. 'degan-x4')."""
    path = Path(spec)
    if path.exists():
        return path
    models = bundled_models()
    if str(spec) in models:
        return models[str(spec)]
    hint = f"; bundled models: {', '.join(models)}" if models else ""
    raise ModelFileError(f"{spec}: no such model file{hint}")
