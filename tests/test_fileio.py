"""Atomic writes: the new content or the old one, never half a file; failures leave no temporary file behind."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time

import pytest

from geosr.errors import WriteError
from geosr.fileio import HOST, atomic_write, remove_stale_temporaries


def test_a_write_creates_folders_and_gives_the_file_ordinary_permissions(tmp_path):
    path = atomic_write(tmp_path / "a" / "b" / "report.json", b"{}")
    assert path.read_bytes() == b"{}"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    atomic_write(path, b"[1]")
    assert path.read_bytes() == b"[1]" and os.listdir(path.parent) == ["report.json"]


def test_a_full_disk_keeps_the_previous_version_and_says_so(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "state.pt", b"good")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(WriteError) as err:
        atomic_write(path, b"new", what="the state", remedy="free some space and resume")
    assert str(err.value) == (
        f"{path}: cannot write the state (No space left on device); its previous version is "
        "kept; free some space and resume"
    )
    with pytest.raises(WriteError, match=r"new.bin: cannot write \(No space left on device\); nothing was written"):
        atomic_write(tmp_path / "new.bin", b"x")
    assert path.read_bytes() == b"good" and os.listdir(tmp_path) == ["state.pt"]


def test_an_interrupt_during_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "last.safetensors", b"old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["last.safetensors"]


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    path = atomic_write(tmp_path / "state.pt", b"good")
    stale = tmp_path / f".state.pt.{HOST}-4242-0123abcd.tmp"  # what a SIGKILL during a write leaves
    stale.write_bytes(b"half")
    older = tmp_path / ".state.pt.k1ll3d_x.tmp"  # as earlier versions named them
    older.write_bytes(b"half")
    others = [".log.csv.abc.tmp", f".state.pt.gz.{HOST}-4242-0123abcd.tmp", ".state.pt.notes"]
    for name in others:
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_temporaries(path) == sorted([stale, older])
    assert sorted(os.listdir(tmp_path)) == sorted([*others, "state.pt"])
    assert remove_stale_temporaries(tmp_path / "missing" / "x") == []


def _gone_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def test_a_write_removes_what_killed_writers_of_the_same_file_left_and_nothing_else(tmp_path):
    """A report or an exported model rewritten after a kill -9: the dead writer's temporary goes, a live writer's
    (another process writing the same file now, or one on another machine of a shared folder) stays."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".report.json.{HOST}-{_gone_pid()}-0123abcd.tmp"
        alive = tmp_path / f".report.json.{HOST}-{sleeper.pid}-4567cdef.tmp"
        other_host = "89abcdef" if HOST != "89abcdef" else "01234567"
        elsewhere = tmp_path / f".report.json.{other_host}-1-0123abcd.tmp"
        of_another_file = tmp_path / f".report.json.gz.{HOST}-{_gone_pid()}-0123abcd.tmp"
        for p in (dead, alive, elsewhere, of_another_file):
            p.write_bytes(b"half")
        os.utime(alive, (time.time() + 5, time.time() + 5))  # written after the sleeper started
        atomic_write(tmp_path / "report.json", b"{}")
        assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (alive, elsewhere, of_another_file)) + [
            "report.json"
        ]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_refused_place_is_not_told_to_free_space(tmp_path, monkeypatch):
    """No permission or a read-only disk: the remedy is another place, not space; a full disk names space."""

    def refuse(*args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(WriteError) as err:
        atomic_write(tmp_path / "r.json", b"{}", what="the batch report")
    assert "Permission denied" in str(err.value) and "free some space" not in str(err.value)
    assert "no permission here, or a read-only disk" in str(err.value)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "open", full)
    with pytest.raises(WriteError, match="free some space or choose another --report"):
        atomic_write(tmp_path / "r.json", b"{}", remedy="choose another --report")
