"""The README's Python examples run as written, in order, from a folder laid out as the repository's root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SCENE = REPO / "examples" / "data" / "RGB.byte.tif"


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_readme_has_the_python_examples():
    code = "\n".join(python_blocks((REPO / "README.md").read_text()))
    for name in (
        "geosr.upscale(",
        "geosr.upscale_folder(",
        "geosr.load_model(",
        "geosr.upscale_array(",
        "geosr.upscale_dataarray(",
        "except geosr.RasterError",
    ):
        assert name in code


@pytest.mark.slow
def test_the_readme_python_examples_run(tmp_path, monkeypatch, capsys, one_torch_thread):
    """Runs every block in one namespace, as a reader pasting them in turn: the bundled degan-x4 on 32 x 32 windows."""
    if not EXAMPLE_SCENE.exists():
        pytest.skip(f"{EXAMPLE_SCENE} is not in this checkout")
    (tmp_path / "examples" / "data").mkdir(parents=True)
    (tmp_path / "examples" / "data" / "RGB.byte.tif").symlink_to(EXAMPLE_SCENE)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}  # as a script runs them (the Dask example is guarded so)
    skipped = []
    for i, block in enumerate(python_blocks((REPO / "README.md").read_text())):
        if "rioxarray" in block:
            try:
                import rioxarray  # noqa: F401
            except ImportError:
                skipped.append(i)  # the optional extra is not installed
                continue
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.startswith("done 16384 output pixels")  # 32 x 32 input pixels at x4
    assert "1 done, 0 skipped, 0 failed" in out and "finished 0 1 done, 0 to retry" in out
    assert "not upscaled: no-such-scene.tif: no such file or folder" in out
    assert "(3, 128, 128) uint8" in out
    assert namespace["sr"].shape == (3, 128, 128)
    if not skipped:
        assert "EPSG:32618 (75.009" in out and namespace["sr_da"].shape == (3, 128, 128)
