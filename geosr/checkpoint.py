"""Model files: safetensors weights with a JSON model card in the file's metadata.

A model file is a plain ``.safetensors`` file. Its metadata holds one key, ``geosr_card``, a JSON model card with the
generator's configuration, the bands and radiometric convention it expects, the recommended tile size and overlap,
and the training provenance and measured metrics. ``load_generator(path)`` rebuilds the model from the file alone;
``init_from_model`` warm-starts a training run from one. Both read through ``_read_weights``, the one validated read
(the header's checks: ``geosr.safetensorsfile``).

Loading builds the network once, on the meta device (structure and shapes, no storage, no random initialisation),
checks the file against it, and makes the file's tensors, as float32, its parameters (``load_state_dict(assign=True)``).

Loading never unpickles anything: PyTorch ``.pt``/``.pth`` files, truncated or corrupt files, cards with invalid
settings and weights that do not fit the card are refused from the header, before any model is built; weights that
hold NaN or infinite values are refused once read. Every refusal is a one-line ``ModelFileError`` naming the file.
``save_generator`` writes atomically (``geosr.fileio``) and never writes a file that loading would refuse.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from geosr.bundled import resolve_model
from geosr.errors import ModelFileError, one_line, printable
from geosr.fileio import atomic_write
from geosr.models.generator import Generator, GeneratorConfig
from geosr.safetensorsfile import check_weights, read_header
from geosr.tiling import tiling_problem
from geosr.version import __version__

CARD_KEY = "geosr_card"
FORMAT_VERSION = 1

# The radiometric convention every geosr generator uses: inputs and outputs are in [-1, 1].
# uint8 data maps 0..255 to -1..1; other dtypes map a global per-band value range to -1..1 (see geosr.radiometry).
DEFAULT_RADIOMETRY = {
    "model_range": [-1.0, 1.0],
    "uint8": "0..255 maps linearly to -1..1",
    "other": "a global per-band value range (percentiles or --value-range) maps linearly to -1..1",
}


def _printable_text(value: Any) -> Any:
    """``value`` with every string in it (in lists and dicts too, keys included) through geosr.errors.printable."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [_printable_text(v) for v in value]
    if isinstance(value, dict):
        return {_printable_text(k): _printable_text(v) for k, v in value.items()}
    return value


@dataclass
class ModelCard:
    """What a model file says about its model. Tile size and overlap are in input (LR) pixels."""

    config: GeneratorConfig
    name: str = "degan"
    description: str = ""
    bands: list[str] = field(default_factory=lambda: ["red", "green", "blue"])
    radiometry: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RADIOMETRY))
    tile_size: int = 64
    overlap: int = 16
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    geosr_version: str = __version__
    format_version: int = FORMAT_VERSION

    @property
    def scale(self) -> int:
        return self.config.scale

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["scale"] = self.config.scale
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        """Validate and build a card; raises ModelFileError naming ``source`` on any bad value."""
        if not isinstance(data, dict):
            raise ModelFileError(f"{source}: the model card is not a JSON object")
        data = dict(data)
        data.pop("scale", None)
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(
                f"{source}: model file format {version!r} is newer than this geosr reads ({FORMAT_VERSION}); "
                "upgrade geosr"
            )
        try:
            config = GeneratorConfig.from_dict(data.pop("config"))
        except KeyError:
            raise ModelFileError(
                f"{source}: the model card has no generator config; the file was edited or not written by geosr: "
                "export the model again (geosr export) or use another model file"
            ) from None
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: invalid generator config in the model card: {exc}") from None
        known = {
            "name",
            "description",
            "bands",
            "radiometry",
            "tile_size",
            "overlap",
            "training",
            "metrics",
            "geosr_version",
            "format_version",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelFileError(f"{source}: unknown model card fields {unknown}; upgrade geosr")
        card = cls(config=config, **data)
        card.validate(source)
        for key in ("name", "description", "bands", "radiometry", "training", "metrics", "geosr_version"):
            setattr(card, key, _printable_text(getattr(card, key)))  # a card's text never drives a terminal
        return card

    def validate(self, source: str = "model card") -> None:
        def bad(msg: str) -> ModelFileError:
            return ModelFileError(f"{source}: {msg}")

        if not isinstance(self.bands, list) or not all(isinstance(b, str) for b in self.bands):
            raise bad("'bands' must be a list of band names")
        if len(self.bands) != self.config.in_channels:
            raise bad(f"{len(self.bands)} band names for a model with {self.config.in_channels} input channels")
        problem = tiling_problem(self.tile_size, self.overlap)
        if problem:
            raise bad(f"the card's {problem}")
        for key in ("radiometry", "training", "metrics"):
            if not isinstance(getattr(self, key), dict):
                raise bad(f"'{key}' must be a JSON object")


def save_generator(
    path: str | os.PathLike, model: Generator, card: ModelCard, dtype: torch.dtype = torch.float32
) -> Path:
    """Write ``model``'s weights (cast to ``dtype``) and ``card`` to ``path`` atomically; returns the path.

    Raises ValueError when the card describes another architecture, ModelFileError for an invalid card or for a
    weight that is NaN or infinite in ``dtype`` (nothing is written: loading would refuse the file), WriteError when
    the disk refuses the file (any earlier version of ``path`` is kept).
    """
    path = Path(path)
    if card.config != model.config:
        raise ValueError("the card's config differs from the model's config")
    card.validate(str(path))
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    bad = _first_non_finite(tensors)
    if bad:
        raise ModelFileError(
            f"{path}: not written: weight {bad} holds NaN or infinite values in {str(dtype).removeprefix('torch.')} "
            "(a diverged model, or weights beyond the range of that dtype)"
        )
    metadata = {CARD_KEY: json.dumps(card.to_dict(), sort_keys=True)}
    return atomic_write(path, safetensors_bytes(tensors, metadata=metadata), what="the model file")


RUN_MODEL_FILES = (
    ("best.safetensors", "the best by validation"),
    ("last.safetensors", "the last step"),
)  # the model files geosr train writes in its run folder, and what each holds


def model_file(spec: str | os.PathLike) -> Path:
    """The model file ``spec`` names (a path, or a bundled model's name: geosr.bundled.resolve_model).

    Raises ModelFileError for a name that is neither, and for a folder; the message for a geosr training run's folder
    names the model files in it (best.safetensors, last.safetensors) to give instead.
    """
    path = resolve_model(spec)
    if not path.is_dir():
        return path
    found = [(path / name, what) for name, what in RUN_MODEL_FILES if (path / name).is_file()]
    if not found:
        raise ModelFileError(
            f"{path}: is a folder, not a model file; give a geosr .safetensors model file or a bundled model's name "
            "(geosr info lists them)"
        )
    choices = " or ".join(f"{file} ({what})" for file, what in found)
    raise ModelFileError(f"{path}: a training run's folder, not a model file; give {choices}")


def read_card(path: str | os.PathLike, *, weights: bool = False) -> ModelCard:
    """The model card of a model file (or bundled model name), validated; the weights are not read.

    weights: also check the tensors the header lists against the card's architecture (names, shapes, dtypes; see
    check_weights), still without reading them. Raises ModelFileError.
    """
    path = model_file(path)
    header = read_header(path)
    card = _card_from_header(path, header)
    if weights:
        check_weights(path, header, expected_shapes(card.config))
    return card


def _card_from_header(path: Path, header: dict[str, Any]) -> ModelCard:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or CARD_KEY not in meta:
        raise ModelFileError(f"{path}: a safetensors file without a geosr model card; it was not written by geosr")
    try:
        data = json.loads(meta[CARD_KEY])
    except (TypeError, json.JSONDecodeError, RecursionError):
        raise ModelFileError(
            f"{path}: the model card is not valid JSON; the file was edited or damaged: export the model again "
            "(geosr export) or use another model file"
        ) from None
    return ModelCard.from_dict(data, source=str(path))


def load_generator(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[Generator, ModelCard]:
    """Rebuild the generator stored in ``path`` (a model file or a bundled model name); returns (model, card).

    The model is in eval mode, in float32, on ``device``; its weights are the file's, with no random initialisation
    on the way. ``memory_format=torch.channels_last`` lays out the conv weights so as they are read (what
    ``model.to(memory_format=...)`` would do in a second pass). Raises ModelFileError for anything that is not a
    valid, complete geosr model file with finite weights.
    """
    card, tensors, model = _read_weights(path, memory_format)
    model.load_state_dict(tensors, assign=True)  # the float32 tensors become the parameters, not copied again
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer would stay empty: the generator must then compute it here
        raise RuntimeError(f"{path}: model files hold no value for the generator's tensors {left}")
    return model.to(device).eval(), card


SHA256_CHUNK = 1 << 20  # bytes read at a time while a model file is hashed


def model_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of the bytes of the model file ``path``, read in chunks of SHA256_CHUNK (memory stays small
    whatever the file's size). What outputs record as GEOSR_MODEL_SHA256; ``sha256sum MODEL`` gives the same.

    Raises ModelFileError when the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as f:
            while chunk := f.read(SHA256_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _read_weights(
    spec: str | os.PathLike, memory_format: torch.memory_format = torch.contiguous_format
) -> tuple[ModelCard, dict[str, torch.Tensor], Generator]:
    """The card and float32 tensors of a model file, and the storage-less (meta) generator of its card.

    The file is validated from its header (read once), weight names and shapes against that generator, before any
    tensor is loaded; each tensor is then a fresh float32 copy (fp16, bf16 and fp64 files load as float32, and
    nothing keeps the file's memory map alive), 4-D ones in ``memory_format``, refused if any value is NaN or
    infinite.
    """
    path = model_file(spec)
    header = read_header(path)
    card = _card_from_header(path, header)
    model = _meta_generator(card.config)
    check_weights(path, header, _shapes(model))  # from the header, before anything is allocated
    try:
        stored = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise ModelFileError(f"{path}: corrupt model file ({one_line(exc)})") from None
    tensors = {name: _float32_copy(t, memory_format) for name, t in stored.items()}
    del stored
    bad = _first_non_finite(tensors)
    if bad:
        count = sum(not _all_finite(t) for t in tensors.values())
        raise ModelFileError(
            f"{path}: weight {bad} holds NaN or infinite values ({count} of {len(tensors)} tensors do); the model "
            "diverged in training or the file is damaged: use another model file"
        )
    return card, tensors, model


def _first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The first name (in sorted order) whose CPU tensor holds a NaN or an infinity, or None."""
    return next((name for name in sorted(tensors) if not _all_finite(tensors[name])), None)


# A model file is about a hundred tensors. PyTorch runs each conversion or check of a large one in its thread pool,
# where on a busy machine every call waits for a core: seconds per model where numpy, one thread, takes milliseconds.
# numpy has no bfloat16: those tensors go through PyTorch.


def _all_finite(t: torch.Tensor) -> bool:
    """Whether the CPU tensor ``t`` holds no NaN and no infinity."""
    if t.dtype == torch.bfloat16:
        return bool(torch.isfinite(t).all())
    return bool(np.isfinite(t.numpy()).all())


def _float32_copy(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A new float32 tensor with the values of the CPU tensor ``t`` (in ``memory_format`` if 4-D), in memory PyTorch
    allocated (and aligned) as for any parameter it creates."""
    layout = memory_format if t.ndim == 4 else torch.contiguous_format
    out = torch.empty(t.shape, dtype=torch.float32, memory_format=layout)
    if t.dtype == torch.bfloat16:
        out.copy_(t)
    else:
        np.copyto(out.numpy(), t.numpy())
    return out


def _meta_generator(config: GeneratorConfig) -> Generator:
    """The generator ``config`` describes on the meta device: structure and shapes, no storage, no initialisation.

    (Initialising meta tensors is not free: ``kaiming_normal_`` on the meta device imports torch._dynamo, seconds.)
    """
    with torch.device("meta"):
        return Generator(config, init_weights=False)


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(config: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """The weight names and shapes of the generator ``config`` describes, without allocating it (meta device)."""
    return _shapes(_meta_generator(config))


def init_from_model(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Copy into ``model`` every tensor of the model file ``path`` whose name and shape match (a warm start).

    The file is validated as in load_generator (a geosr safetensors file, never unpickled). Returns what was copied:
    {"model": file name, "card": its model name, "copied": n, "total": tensors of ``model``}. Raises ModelFileError
    when nothing matches (an unrelated architecture).
    """
    path = resolve_model(path)
    card, tensors, _ = _read_weights(path)
    own = model.state_dict()
    matched = {k: v.to(own[k].dtype) for k, v in tensors.items() if k in own and v.shape == own[k].shape}
    if not matched:
        raise ModelFileError(f"{path}: no weight matches this model's architecture; nothing to start from")
    model.load_state_dict(matched, strict=False)
    return {"model": path.name, "card": card.name, "copied": len(matched), "total": len(own)}
