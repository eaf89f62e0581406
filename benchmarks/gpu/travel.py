"""What travels to the GPU machine: the files its one call needs; the rest of the checkout stays here.

    python benchmarks/gpu/travel.py light [--scales 4]    # before the device call (prepare.sh does it)
    python benchmarks/gpu/travel.py restore               # after the last call
    python benchmarks/gpu/travel.py status

The device tool copies the checkout's tracked files and its untracked files that git does not ignore, 64 MiB per
call together with the carried paths. The checkout is about 54 MB, 44 MB of it the three shipped model files, and
the bundle (wheels and images, about 48 MB) would need several calls beside it, each with its own transfer and the
risk that the machine goes back between them. The GPU run needs far less of the checkout: geosr's code and the
model it trains, cli/ and training/, the benchmark scripts, one example raster and the packaging files (about 18
MB). ``light`` takes every other tracked file out of git's index (``git rm --cached``: the files on disk are not
touched) and lists them in ``.git/info/exclude`` between two marker lines, so that they are neither tracked nor
untracked-and-not-ignored, and do not travel. ``restore`` puts them back into the index from HEAD and removes the
lines. While the checkout is light, a pre-commit hook refuses commits: one would delete those files from the
repository.

Standard library only, like the rest of benchmarks/gpu/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BEGIN = "# geosr-gpu-travel: begin (benchmarks/gpu/travel.py restore removes this block)"
END = "# geosr-gpu-travel: end"
HOOK_MARK = "# geosr-gpu-travel pre-commit guard"
HOOK = f"""#!/bin/sh
{HOOK_MARK}
echo "the checkout is light for a GPU call (benchmarks/gpu/travel.py): a commit now would delete the files left" >&2
echo "behind from the repository; run: python benchmarks/gpu/travel.py restore" >&2
exit 1
"""

# What the GPU run needs (benchmarks/gpu/run.py installs SOURCE; measure.py reads the example raster and the
# benchmark modules beside it); geosr/weights/ keeps only the models of the scales trained.
NEEDED_DIRS = ("geosr/", "cli/", "training/", "benchmarks/gpu/")
NEEDED_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", ".gitignore", "examples/data/RGB.byte.tif")


class TravelError(Exception):
    """A checkout that cannot be made light or restored (not a git checkout, staged changes in the way)."""


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = {**os.environ, "GIT_LITERAL_PATHSPECS": "1"}
    done = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, env=env)
    if done.returncode != 0:
        raise TravelError(f"git {' '.join(args)} in {repo}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def needed(path: str, scales: list[int]) -> bool:
    """Whether the GPU run needs the tracked file ``path`` (relative, with '/')."""
    if path.startswith("geosr/weights/") and path.endswith(".safetensors"):
        return path in {f"geosr/weights/degan-x{s}.safetensors" for s in scales}
    if path.startswith("benchmarks/") and path.count("/") == 1 and path.endswith(".py"):
        return True  # measure.py loads bench.py, pipeline_only.py, model_share.py beside it
    return path in NEEDED_FILES or path.startswith(NEEDED_DIRS)


def tracked(repo: Path) -> list[str]:
    return [n for n in git(repo, "ls-files", "-z").decode().split("\0") if n]


def git_path(repo: Path, name: str) -> Path:
    """A file inside the checkout's git folder (``info/exclude``, ``hooks/pre-commit``)."""
    return (repo / git(repo, "rev-parse", "--git-path", name).decode().strip()).resolve()


def _escape(path: str) -> str:
    """``path`` as an anchored gitignore pattern that matches it alone."""
    out = "".join("\\" + c if c in "\\*?[!# " else c for c in path)
    return "/" + out


def _unescape(line: str) -> str:
    out, i, text = [], 0, line[1:]
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def left_behind(repo: Path) -> list[str]:
    """The paths a light checkout leaves behind (empty when it is not light)."""
    f = git_path(repo, "info/exclude")
    lines = f.read_text().splitlines() if f.is_file() else []
    if BEGIN not in lines:
        return []
    start = lines.index(BEGIN) + 1
    stop = lines.index(END, start) if END in lines[start:] else len(lines)
    return [_unescape(x) for x in lines[start:stop] if x.startswith("/")]


def _write_block(repo: Path, paths: list[str]) -> None:
    f = git_path(repo, "info/exclude")
    lines = f.read_text().splitlines() if f.is_file() else []
    if BEGIN in lines:
        start = lines.index(BEGIN)
        stop = lines.index(END, start) + 1 if END in lines[start:] else len(lines)
        del lines[start:stop]
    if paths:
        lines += [BEGIN, *(_escape(p) for p in paths), END]
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n" if lines else "")
    os.replace(tmp, f)


def _pathspecs(paths: list[str]) -> bytes:
    return b"".join(p.encode() + b"\0" for p in paths)


def light(repo: Path, scales: list[int]) -> list[str]:
    """Leave behind every tracked file the GPU run of ``scales`` does not need; returns those paths.

    A checkout that is already light is restored first. Raises TravelError when a file to leave behind has changes
    staged in the index (they would be lost from it) or git fails.
    """
    restore(repo)
    paths = [p for p in tracked(repo) if not needed(p, scales)]
    if not paths:
        return []
    staged = set(git(repo, "diff", "--cached", "--name-only", "-z").decode().split("\0")) - {""}
    clash = sorted(staged & set(paths))
    if clash:
        raise TravelError(
            f"{clash[0]} (and {len(clash) - 1} more) has changes staged in git's index; commit or unstage them first"
            if len(clash) > 1
            else f"{clash[0]} has changes staged in git's index; commit or unstage it first"
        )
    _write_block(repo, paths)  # first: the record of what restore must put back
    hook = git_path(repo, "hooks/pre-commit")
    if not hook.exists():
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(HOOK)
        hook.chmod(0o755)
    git(repo, "rm", "--cached", "-q", "--pathspec-from-file=-", "--pathspec-file-nul", stdin=_pathspecs(paths))
    return paths


def restore(repo: Path) -> list[str]:
    """Put the files left behind back into git's index (from HEAD) and remove the exclude block and the hook;
    returns the paths restored (empty when the checkout was not light)."""
    paths = left_behind(repo)
    if paths:
        in_head = set(git(repo, "ls-tree", "-r", "-z", "--name-only", "HEAD").decode().split("\0"))
        back = [p for p in paths if p in in_head]
        if back:
            git(repo, "reset", "-q", "HEAD", "--pathspec-from-file=-", "--pathspec-file-nul", stdin=_pathspecs(back))
        _write_block(repo, [])
    hook = git_path(repo, "hooks/pre-commit")
    if hook.is_file() and HOOK_MARK in hook.read_text(errors="replace"):
        hook.unlink()
    return paths


def _size(repo: Path, paths: list[str]) -> int:
    return sum((repo / p).stat().st_size for p in paths if (repo / p).is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("light", "restore", "status"))
    p.add_argument("--scales", default="4", help="the models that travel, as 4 or 4,2 (light; default 4)")
    p.add_argument("--repo", default=str(REPO), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    repo = Path(args.repo)
    try:
        scales = [int(s) for s in args.scales.split(",") if s.strip()]
        if not scales or any(s not in (2, 4) for s in scales):
            raise ValueError
    except ValueError:
        p.error(f"--scales: {args.scales!r} is not a list of 2 and 4 (such as 4 or 4,2)")
    sys.path.insert(0, str(Path(__file__).parent))
    from bundle import DEVICE_LIMIT, tree_bytes

    try:
        if args.action == "light":
            paths = light(repo, scales)
            print(f"left behind: {len(paths)} tracked files, {_size(repo, paths) / 1e6:.2f} MB (on disk, untouched)")
        elif args.action == "restore":
            paths = restore(repo)
            print(f"restored: {len(paths)} files back in git's index" if paths else "the checkout was not light")
        else:
            paths = left_behind(repo)
            print(f"light: {len(paths)} files left behind" if paths else "not light: the whole checkout travels")
        tree = tree_bytes(repo)
        print(f"what travels of the checkout: {tree / 1e6:.2f} MB = {tree / DEVICE_LIMIT:.1%} of 64 MiB")
    except TravelError as exc:
        print(f"travel.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
