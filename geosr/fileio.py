"""Atomic file writes: a file on disk is always either its previous version or the complete new one.

``atomic_write(path, data)`` writes to a temporary file beside ``path`` (``.NAME.XXXXXXXX.tmp``, same folder, so the
rename never crosses file systems), flushes it to disk (fsync), gives it the permissions of an ordinary new file and
renames it over ``path`` with ``os.replace``. A process killed mid-write (SIGKILL, a power cut) leaves ``path``
untouched and at most one temporary file, which ``remove_stale_temporaries(path)`` clears. Model files
(geosr.checkpoint), training states, logs and configs (geosr.training.state) are all written this way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from geosr.errors import WriteError

DEFAULT_REMEDY = "free some space or fix the permissions"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_prefix(path: Path) -> str:
    """The name prefix of the temporary files that atomic_write creates beside ``path``."""
    return f".{path.name}."


def atomic_write(
    path: str | os.PathLike, data: bytes, *, what: str = "", remedy: str = DEFAULT_REMEDY
) -> Path:
    """Write ``data`` to ``path`` via a temporary file, fsync and a rename; returns ``path`` as a Path.

    what: the kind of file for the error message ("the model file"); remedy: what the user can do about a failure.
    Raises WriteError "PATH: cannot write [what] (reason); its previous version is kept (or: nothing was written);
    remedy" for any OSError (a full disk, no permission, a read-only file system), after removing the temporary
    file. Any other exception (KeyboardInterrupt) also removes the temporary file and propagates. In both cases
    ``path`` keeps its previous content.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "its previous version is kept" if path.exists() else "nothing was written"
        subject = f" {what}" if what else ""
        raise WriteError(f"{path}: cannot write{subject} ({exc.strerror or exc}); {kept}; {remedy}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that atomic_write leaves beside ``path`` when its process is killed mid-write.

    Returns the removed paths. Only call this when no other process may be writing ``path`` at the same time.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{temporary_prefix(path)}*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
