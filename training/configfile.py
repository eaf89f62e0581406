"""Reading a training configuration: TOML files (with ``base`` files), command-line overrides typed like the
settings, and the settings a resumed run may change. ``TrainConfig`` (geosr.training.config) is what they build.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from geosr.training.config import GROUPS, ConfigError, TrainConfig


def _types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def coerce(name: str, value: Any, source: str) -> Any:
    """Check (and, for numbers, convert) one value read from TOML; raises ConfigError naming it."""
    types = _types()
    if name not in types:
        close = difflib.get_close_matches(name, TrainConfig.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: unknown setting {name!r}{hint}")
    tp, optional = _base_type(types[name])
    if value is None and optional:
        return None
    origin = typing.get_origin(tp)

    def bad() -> ConfigError:
        return ConfigError(f"{source}: {name} = {value!r} is not a valid {_type_name(tp)}")

    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise bad()
        return [_scalar(item, x, bad) for x in value]
    if name == "num_workers" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _scalar(tp, value, bad)


def _scalar(tp: Any, value: Any, bad) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise bad()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def read_toml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of a config file (with its ``base`` chain applied), checked; paths stay as written."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' files include each other in a loop")
    try:
        doc = tomllib.loads(path.read_bytes().decode("utf-8-sig"))  # a byte-order mark (Notepad's) is no error
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file; give the TOML file's path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror}); check its permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); a config file is "
            "TOML, which is UTF-8: save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    out: dict[str, Any] = {}
    base = doc.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a file name")
        out.update(read_toml(path.parent / base, _seen + (path.resolve(),)))
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            if key not in GROUPS:
                raise ConfigError(f"{path}: unknown table [{key}]; tables are {', '.join(GROUPS)}")
            for k, v in value.items():
                group = _group_of(k)
                if group is not None and group != key:
                    raise ConfigError(f"{path}: {k} belongs in [{group}], not [{key}]")
                flat[k] = v
        else:
            flat[key] = value
    for key, value in flat.items():
        out[key] = coerce(key, value, str(path))
    return out


def _group_of(name: str) -> str | None:
    for f in fields(TrainConfig):
        if f.name == name:
            return f.metadata["group"]
    return None


def build_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < config file (and its bases) < ``overrides`` (already typed, None = not given); validated."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_toml(config_file))
    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in TrainConfig.names():
                raise ConfigError(f"unknown setting {key!r}")
            values[key] = value
    return TrainConfig(**values).validate()


# Settings a resumed run may not change: they define the model, the data stream or the step accounting.
FIXED_ON_RESUME = (
    "data",
    "extra_data",
    "extra_repeat",
    "bands",
    "patch_size",
    "batch_size",
    "dataset_repeat",
    "degrade",
    "scale",
    "channels",
    "n_blocks",
    "attention",
    "refiner",
    "refiner_base",
    "global_skip",
    "res_scale",
    "d_base",
    "d_blocks",
    "seed",
    "adversarial_weight",
    "feature_matching_weight",
)


# Settings that choose the validation images: a resumed run whose values differ chooses its best model anew.
VALIDATION = ("val_data", "val_images")
_PATHS = ("data", "val_data", "extra_data")
_DEFAULT_BANDS = (1, 2, 3)  # bands None: the first three


def _real(path: Any) -> str | None:
    return None if path in (None, "") else os.path.realpath(os.path.expanduser(str(path)))


def same_setting(key: str, a: Any, b: Any) -> bool:
    """Whether two values of setting ``key`` mean the same: folders through links, ``..`` and a trailing slash,
    bands None and the first three, lists and tuples of the same values."""
    if key in _PATHS:
        many = key == "extra_data"
        return [_real(v) for v in (a or [])] == [_real(v) for v in (b or [])] if many else _real(a) == _real(b)
    if key == "bands":
        return tuple(a or _DEFAULT_BANDS) == tuple(b or _DEFAULT_BANDS)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def check_state_config(saved: dict[str, Any], cfg: TrainConfig, config_file: Path) -> None:
    """ConfigError when a setting that defines the model or the data stream differs between a run's saved state
    (``saved``: its config) and the config it is resumed with (``config_file`` edited by hand). Folders may differ:
    data moved elsewhere is the same data."""
    changed = [
        f"{k} = {getattr(cfg, k)!r} (the state: {saved[k]!r})"
        for k in FIXED_ON_RESUME
        if k not in _PATHS and k in saved and not same_setting(k, getattr(cfg, k), saved[k])
    ]
    if changed:
        raise ConfigError(
            f"{config_file}: {'; '.join(changed)}: the run's saved state was trained otherwise, and these settings "
            "define its model or data; put them back in config.toml, or start a new run with another -o/--output"
        )


def resume_config(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """The saved config of a run with ``overrides`` applied; ConfigError for a setting that cannot change."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    for k in [k for k in changes if k in FIXED_ON_RESUME and same_setting(k, changes[k], getattr(saved, k))]:
        del changes[k]  # the saved value written otherwise ("." for the folder it names)
    fixed = [k for k in changes if k in FIXED_ON_RESUME]
    if fixed:
        raise ConfigError(
            f"cannot change {', '.join(fixed)} when resuming a run (they define its model or data); start a new run "
            "with another -o/--output instead"
        )
    return replace(saved, **changes).validate()
