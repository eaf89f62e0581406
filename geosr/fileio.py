"""What geosr may write, and atomic file writes: a file on disk is always either its previous version or the new one.

``check_target(path, ...)`` is the one rule for every file geosr writes (outputs, reports, exported models, maps),
checked before any work starts: never an input of the run, never another output of the run, never an existing file
without ``overwrite`` (a previous version of the same kind of file, e.g. an earlier batch report, may be declared
replaceable), never a folder, and never a special file renamed over: a character device or a named pipe is written
into where that is what the user evidently asks (a report to ``/dev/stdout`` or a FIFO: ``stream_ok``) and refused
otherwise.

``atomic_write(path, data)`` writes to a temporary file beside ``path`` (``.NAME.HOST-PID-RANDOM.tmp``, same folder,
so the rename never crosses file systems), flushes it to disk (fsync), gives it the permissions of an ordinary new file
and renames it over ``path`` with ``os.replace``. A process killed mid-write (SIGKILL, a power cut) leaves ``path``
untouched and at most one temporary file, which the next atomic_write of ``path`` removes once its writer is gone
(``writer_alive``), and ``remove_stale_temporaries(path)`` removes whatever its writer. Model files
(geosr.checkpoint), training states, logs and configs (geosr.training.state), reports, previews and exported ONNX
models are all written this way.

Temporary files name their writer (``writer_stamp``: a hash of the machine's name, the process id and a random token)
so that a later process can tell one left by a killed process from one that is being written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from geosr.errors import OptionError, OutputExistsError, WriteError

DEFAULT_REMEDY = "free some space or fix the permissions"


@dataclass(frozen=True)
class Target:
    """A checked path to write: a regular file written atomically, or (``stream``) a device or pipe written into."""

    path: Path
    stream: bool = False


def _same(a: Path, b: Path) -> bool:
    """One file: the same path once links and ``..`` are resolved (``sub/../x`` is ``x`` even while ``sub`` does not
    exist, as it will once a write creates it), or one file through hard links."""
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    if ra == rb:
        return True
    try:
        return os.path.samefile(ra, rb)
    except OSError:
        return False


def special_kind(mode: int) -> str | None:
    """What a file of ``mode`` is when it is no regular file or folder ("a named pipe (FIFO)", ...), else None."""
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def check_target(
    path: str | os.PathLike,
    *,
    what: str,
    option: str,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike] = (),
    outputs: Sequence[tuple[str, str | os.PathLike]] = (),
    replaceable: Callable[[Path], bool] | None = None,
    stream_ok: bool = False,
) -> Target:
    """Raise unless ``what`` (e.g. "the batch report") may be written at ``path``, named by ``option``.

    inputs: the files the run reads (compared through links, ``..`` and hard links); outputs: (description, path)
    of the other files the run writes; replaceable(path): whether an existing file is an earlier version of this
    kind of file, which may be replaced without ``overwrite``; stream_ok: a character device or a named pipe is
    written into (``Target.stream``) instead of refused. Errors: OptionError for a clash with an input or an
    output, a folder or a special file; OutputExistsError for an existing file without ``overwrite``.
    """
    path = Path(path)
    for source in inputs:
        if _same(path, Path(source)):
            raise OptionError(
                f"{path}: is an input of this run; geosr never writes over its inputs: give {option} another path",
                option=option,
            )
    for label, other in outputs:
        if _same(path, Path(other)):
            raise OptionError(f"{path}: is also {label} of this run; give {option} another path", option=option)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink() and not overwrite:  # a dangling link: writing would replace the link
            raise OutputExistsError(
                f"{path}: exists (a link to a missing file); pass --overwrite to replace it", option="--overwrite"
            ) from None
        return Target(path)
    except OSError as exc:  # a file where a folder should be, no permission to look
        raise WriteError(
            f"{path}: cannot write {what} ({exc.strerror}); nothing was written; give {option} another path"
        ) from None
    if stat.S_ISDIR(mode):
        raise OptionError(f"{path}: is a folder; give {option} a file name", option=option)
    kind = special_kind(mode)
    if kind is not None:
        if stream_ok and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            return Target(path, stream=True)
        raise OptionError(
            f"{path}: is {kind}, not a regular file; geosr writes {what} only to a file: give {option} a file path",
            option=option,
        )
    if not overwrite and not (replaceable is not None and replaceable(path)):
        earlier = f" (and is not {what} of an earlier run)" if replaceable is not None else ""
        raise OutputExistsError(
            f"{path}: already exists{earlier}; pass --overwrite to replace it, or give {option} another path",
            option="--overwrite",
        )
    return Target(path)


def remedy_for(exc: OSError, remedy: str) -> str:
    """The remedy of a failed write: ``remedy``, with free space named for a full disk and never for a place that
    cannot be written (no permission, a read-only disk), where more space would not help."""
    if exc.errno == errno.ENAMETOOLONG:
        return "give it a shorter name"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and "space" not in remedy:
        return f"free some space or {remedy}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and "space" in remedy:
        return "write it where this user may write (no permission here, or a read-only disk)"
    return remedy


def write_target(target: Target, data: bytes, *, what: str = "", remedy: str = DEFAULT_REMEDY) -> Path:
    """Write ``data`` to a checked target: atomically to a file, or straight into a device or pipe."""
    if not target.stream:
        return atomic_write(target.path, data, what=what, remedy=remedy)
    try:
        with open(target.path, "wb") as f:
            f.write(data)
    except OSError as exc:
        subject = f" {what}" if what else ""
        raise WriteError(
            f"{target.path}: cannot write{subject} ({exc.strerror or exc}); {remedy_for(exc, remedy)}"
        ) from None
    return target.path


# This machine, as a short hash of its name: a temporary file names the machine and process that write it.
HOST = hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()
_MINE: set[str] = set()  # the random part of the temporary names this process made


def writer_stamp() -> str:
    """``HOST-PID-RANDOM``: this machine, this process and a token of its own, for a temporary file's name."""
    token = uuid.uuid4().hex[:8]
    _MINE.add(token)
    return f"{HOST}-{os.getpid()}-{token}"


def writer_alive(host: str, pid: int, token: str, written: float) -> bool:
    """Whether the writer of a temporary file stamped ``host-pid-token`` (last written at ``written``, epoch seconds)
    may still run. Another machine's writer is taken as alive (a shared network folder). Process ids are reused:
    this process's own id on a file it did not make (geosr as process 1 of a container, run again), or a process
    started after the file was last written (a reboot, a busy machine), is another process."""
    if host != HOST:
        return True
    if pid == os.getpid():
        return token in _MINE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: a process of another user has that id
        pass
    started = _process_start(pid)
    return started is None or started <= written + 2  # the boot time is known to the second


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from Linux's /proc; None elsewhere or when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])  # field 22, after the command name in ()
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


NAME_MAX = 255  # bytes of one file name on the usual file systems (ext4, XFS, APFS, NTFS in UTF-16 units)


def fitting_name(name: str, room: int) -> str:
    """``name``, or when ``room`` more bytes would take it over NAME_MAX, its start and a hash of the whole
    (``start~1a2b3c4d``): the part of a temporary or sidecar name that stands for a long output name."""
    raw = os.fsencode(name)
    if len(raw) + room <= NAME_MAX:
        return name
    digest = hashlib.blake2s(raw, digest_size=4).hexdigest()
    start = os.fsdecode(raw[: NAME_MAX - room - 9]).rstrip("".join(map(chr, range(0xDC80, 0xDD00))))  # whole chars
    return f"{start}~{digest}"


TEMP_ROOM = 40  # bytes a temporary's name adds to the output's: two dots, HOST-PID-RANDOM, ".tmp"


def temporary_prefix(path: Path) -> str:
    """The name prefix of the temporary files that atomic_write creates beside ``path`` (its name cut to fit)."""
    return f".{fitting_name(path.name, TEMP_ROOM)}."


def atomic_write(path: str | os.PathLike, data: bytes, *, what: str = "", remedy: str = DEFAULT_REMEDY) -> Path:
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
        _remove_dead_writers(path)
        tmp = path.with_name(f"{temporary_prefix(path)}{writer_stamp()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # created 0600 while written; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "its previous version is kept" if path.exists() else "nothing was written"
        subject = f" {what}" if what else ""
        raise WriteError(
            f"{path}: cannot write{subject} ({exc.strerror or exc}); {kept}; {remedy_for(exc, remedy)}"
        ) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


_STAMPED = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})\.tmp")
_UNSTAMPED = re.compile(r"[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's names, which earlier versions used


def _temporaries(path: Path) -> list[tuple[os.DirEntry, re.Match | None]]:
    """The temporary files atomic_write left beside ``path``, sorted, each with its writer's stamp (None: a name
    of earlier versions)."""
    prefix = temporary_prefix(path)
    try:
        entries = sorted((e for e in os.scandir(path.parent) if e.name.startswith(prefix)), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        rest = entry.name[len(prefix) :]
        stamp = _STAMPED.fullmatch(rest)
        if stamp is not None or _UNSTAMPED.fullmatch(rest):
            found.append((entry, stamp))
    return found


def _remove_dead_writers(path: Path) -> None:
    """Remove the temporary files of ``path`` whose writer is gone (a killed run of this machine)."""
    for entry, m in _temporaries(path):
        if m is None:
            continue
        with contextlib.suppress(OSError):
            written = entry.stat(follow_symlinks=False).st_mtime
            if not writer_alive(m["host"], int(m["pid"]), m["token"], written):
                os.unlink(entry.path)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that atomic_write leaves beside ``path`` when its process is killed mid-write,
    whatever their writer (also those of earlier geosr versions, named ``.NAME.XXXXXXXX.tmp``).

    Returns the removed paths. Only call this when no other process may be writing ``path`` at the same time.
    """
    path = Path(path)
    stale = [path.parent / entry.name for entry, _ in _temporaries(path)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
