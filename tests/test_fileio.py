"""Atomic writes: the new content or the old one, never half a file; failures leave no temporary file behind."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from geosr.errors import WriteError
from geosr.fileio import atomic_write, remove_stale_temporaries


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
    stale = tmp_path / ".state.pt.k1ll3d.tmp"  # what a SIGKILL during a write leaves
    stale.write_bytes(b"half")
    other = tmp_path / ".log.csv.abc.tmp"
    other.write_bytes(b"")
    assert remove_stale_temporaries(path) == [stale]
    assert sorted(os.listdir(tmp_path)) == [".log.csv.abc.tmp", "state.pt"]
    assert remove_stale_temporaries(tmp_path / "missing" / "x") == []


def test_a_refused_place_is_not_told_to_free_space(tmp_path, monkeypatch):
    """No permission or a read-only disk: the remedy is another place, not space; a full disk names space."""

    def refuse(*args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(WriteError) as err:
        atomic_write(tmp_path / "r.json", b"{}", what="the batch report")
    assert "Permission denied" in str(err.value) and "free some space" not in str(err.value)
    assert "no permission here, or a read-only disk" in str(err.value)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("tempfile.mkstemp", full)
    with pytest.raises(WriteError, match="free some space or choose another --report"):
        atomic_write(tmp_path / "r.json", b"{}", remedy="choose another --report")
