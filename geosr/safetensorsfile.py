"""A safetensors file checked from its header alone, never unpickled: complete, not a pickle, and holding exactly
the weights (names, shapes, floating-point dtypes) a model expects. The checks of ``geosr.checkpoint``'s model files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from geosr.errors import ModelFileError

MAX_HEADER_BYTES = 16 * 1024 * 1024


def read_header(path: Path) -> dict[str, Any]:
    """Check that ``path`` is a complete safetensors file and return its parsed header; never unpickles."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
            # A safetensors file: an 8-byte little-endian header length, then the JSON header ('{').
            n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
            if len(head) < 9 or head[8:9] != b"{" or n > min(MAX_HEADER_BYTES, size - 8):
                if head[:4] == b"PK\x03\x04" or (
                    head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
                ):
                    raise ModelFileError(
                        f"{path}: this is a pickled PyTorch file (.pt/.pth); geosr never unpickles model files. "
                        "Use a geosr .safetensors model file (geosr train exports one)"
                    )
                if Path(path).suffix.lower() == ".onnx":
                    raise ModelFileError(
                        f"{path}: named as an ONNX model, which geosr export writes for other runtimes; geosr runs "
                        "and exports its .safetensors model files: use the one this was exported from"
                    )
                if len(head) < 9:
                    raise ModelFileError(
                        f"{path}: not a safetensors model file (only {size} bytes); give a geosr .safetensors model "
                        "file or a bundled model's name (geosr info lists them)"
                    )
                raise ModelFileError(
                    f"{path}: not a safetensors model file, or truncated (bad header); give a geosr .safetensors "
                    "model file or a bundled model's name (geosr info lists them)"
                )
            f.seek(8)
            raw = f.read(n)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a model file") from None
    except PermissionError:
        raise ModelFileError(f"{path}: no permission to read the model file") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path}: not a safetensors model file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors model file (the header is not a JSON object)")
    data_size = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = int(info["data_offsets"][1])
        except (TypeError, KeyError, IndexError, ValueError):
            raise ModelFileError(f"{path}: corrupt safetensors header (tensor {name!r})") from None
        if end > data_size:
            raise ModelFileError(
                f"{path}: the file is truncated ({size} bytes; tensor {name!r} ends past the end); download or "
                "copy it again"
            )
    return header


WEIGHT_DTYPES = ("F32", "F16", "BF16", "F64")


def check_weights(path: Path, header: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> None:
    """Raise ModelFileError unless the tensors listed in the safetensors ``header`` are exactly the ``expected``
    weights (names and shapes, as ``geosr.checkpoint.expected_shapes`` gives them for the card's config) in
    floating-point dtypes. Reads no tensor data."""
    stored = {k: v for k, v in header.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{path}: weights do not match the card's architecture (missing {missing[:3]}, unexpected {extra[:3]}); "
            "the file is damaged or its card was edited: export the model again with geosr train"
        )
    for name, info in stored.items():
        shape = tuple(info.get("shape", ())) if isinstance(info, dict) else ()
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if shape != expected[name]:
            raise ModelFileError(
                f"{path}: weight {name} has shape {shape}, the card's architecture needs {expected[name]}; the file "
                "is damaged or its card was edited: export the model again with geosr train"
            )
        if dtype not in WEIGHT_DTYPES:
            raise ModelFileError(
                f"{path}: weight {name} is stored as {dtype!r}; geosr model files hold {', '.join(WEIGHT_DTYPES)}"
            )
