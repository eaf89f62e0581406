"""Options shared by several commands: spelled, documented and validated the same way in every command.

Each shared option is one decorator of geosr.cli.options; these tests read the commands themselves, so a command that
defines its own copy of a shared option, or spells one differently, fails here.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from geosr.cli.main import cli

COMMANDS = sorted(cli.commands)

# option -> its names, as every command that takes it must spell them (hidden aliases aside)
SHARED = {
    "--output": ["-o", "--output"],
    "--model": ["-m", "--model"],
    "--scale": ["-s", "--scale"],
    "--bands": ["--bands"],
    "--device": ["--device"],
    "--precision": ["--precision"],
    "--tile-size": ["--tile-size"],
    "--overlap": ["--overlap"],
    "--batch-size": ["--batch-size"],
    "--overwrite": ["--overwrite"],
    "--verbose": ["-v", "--verbose"],
    "--quiet": ["-q", "--quiet"],
}
# which commands take which shared option: a change here is a change of the command line, made on purpose
TAKEN_BY = {
    "--output": {"upscale", "evaluate", "export", "train"},
    "--model": {"upscale", "evaluate"},
    "--scale": {"upscale", "evaluate", "train"},
    "--bands": {"upscale", "evaluate", "train"},
    "--device": {"upscale", "evaluate", "train"},
    "--precision": {"upscale", "evaluate", "train"},
    "--tile-size": {"upscale", "evaluate", "export", "train"},
    "--overlap": {"upscale", "evaluate", "export", "train"},
    "--batch-size": {"upscale", "evaluate", "train"},
    "--overwrite": {"upscale", "evaluate", "export"},
    "--verbose": set(COMMANDS),
    "--quiet": set(COMMANDS),
}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def help_line(command: str, names: list[str]) -> str:
    """The --help line of the option spelled ``names`` in ``command``: its names and metavar, without the help."""
    spelled = ", ".join(names)
    lines = [line.strip() for line in invoke(command, "--help").output.splitlines()]
    found = [line for line in lines if line == spelled or line.startswith(spelled + " ")]
    assert len(found) == 1, f"{command} --help has no line for {spelled}:\n" + "\n".join(lines)
    return found[0].split("  ")[0]  # names and metavar; the help text follows after two spaces


def takes(command: str, option: str) -> bool:
    return any(option in p.opts for p in cli.commands[command].params)


@pytest.mark.parametrize("option", sorted(SHARED))
def test_every_command_spells_a_shared_option_the_same_way(option):
    commands = {c for c in COMMANDS if takes(c, option)}
    assert commands == TAKEN_BY[option]
    spellings = {c: help_line(c, SHARED[option]) for c in sorted(commands)}
    if option != "--output":  # the output is a file, a folder or a run folder: its metavar says which
        assert len(set(spellings.values())) == 1, spellings


def test_old_spellings_still_work_but_are_not_shown():
    for command in ("evaluate", "export", "train"):
        assert "--out " not in invoke(command, "--help").output
    result = invoke("train", "--data", "d", "--out", "runs/x", "--print-config")
    assert result.exit_code == 0 and 'out = "' in result.output and "runs/x" in result.output
    assert invoke("evaluate", "-d", "d", "--out", "r.txt").exit_code == 2  # the check of -o applies to --out


BAD_VALUES = [
    ["--scale", "5"],
    ["--scale", "x"],
    ["--bands", "0,1"],
    ["--bands", "1,1"],
    ["--bands", "1,x"],
    ["--bands", "4,,2"],  # a typo of 4,3,2, not two bands
    ["--bands", "1,2,"],
    ["--device", "tpu"],
    ["--precision", "int8"],
    ["--tile-size", "4"],
    ["--tile-size", "5000"],
    ["--overlap", "-1"],
    ["--tile-size", "32", "--overlap", "17"],
    ["--overlap", "17", "--tile-size", "32"],
    ["--batch-size", "0"],
]
# the least each command needs besides the option under test (nothing is opened: the option fails first)
REQUIRED = {
    "upscale": ["in.tif", "-o", "out.tif"],
    "evaluate": ["-d", "data"],
    "export": ["m.safetensors", "-o", "x.safetensors"],
    "train": ["--data", "data"],
    "info": [],
}


@pytest.mark.parametrize("args", BAD_VALUES, ids=lambda a: " ".join(a))
def test_a_bad_value_gets_the_same_error_and_exit_code_in_every_command(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = [c for c in COMMANDS if all(takes(c, a) for a in args if a.startswith("--"))]
    assert len(commands) >= 2
    errors = {}
    for command in commands:
        result = invoke(command, *REQUIRED[command], *args)
        assert result.exit_code == 2, (command, result.output)
        lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1, result.output
        errors[command] = lines[0]
    assert len(set(errors.values())) == 1, errors
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("command", COMMANDS)
def test_verbosity_is_taken_before_and_after_the_command(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["-q", command, "--help"], [command, "-q", "--help"], ["-v", command, "-vv", "--help"]):
        assert invoke(*args).exit_code == 0


def test_library_option_errors_are_usage_errors_on_their_option(tiny_model, rgb_tif, tmp_path):
    """An OptionError raised by the library (here: text that is not a CRS) exits 2 and points at its option."""
    result = invoke(
        "upscale",
        str(rgb_tif),
        "-o",
        str(tmp_path / "o.tif"),
        "-m",
        str(tiny_model),
        "--bbox",
        "0,0,1,1",
        "--aoi-crs",
        "nonsense",
    )
    assert result.exit_code == 2 and "Invalid value for '--aoi-crs'" in result.output
    # a file the option names that does not fit is not a usage error: exit 1, one line
    missing = invoke(
        "upscale",
        str(rgb_tif),
        "-o",
        str(tmp_path / "o.tif"),
        "-m",
        str(tiny_model),
        "--aoi",
        str(tmp_path / "none.geojson"),
    )
    assert missing.exit_code == 1 and "Usage:" not in missing.output and "none.geojson" in missing.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.tif"]


def test_band_lists_take_commas_spaces_or_both():
    from geosr.cli.options import parse_int_list

    for text in ("4,3,2", "4 3 2", "4, 3, 2", " 4 ,3 , 2 "):
        assert parse_int_list(text) == (4, 3, 2), text
    for text in ("4,,2", ",3", "1,2,", ""):
        with pytest.raises(ValueError):
            parse_int_list(text)


def test_a_file_for_a_folder_or_a_folder_for_a_file_names_the_remedy(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    result = invoke("train", "--data", str(tmp_path), "-o", str(tmp_path / "a.tif"))
    assert (
        result.exit_code == 2
        and f"{tmp_path / 'a.tif'}: is a file, where a folder is wanted; give a folder name" in result.output
    )
    result = invoke("export", str(tmp_path / "m.safetensors"), "-o", str(tmp_path))
    assert (
        result.exit_code == 2 and f"{tmp_path}: is a folder, where a file is wanted; give a file name" in result.output
    )


def test_a_file_on_the_way_of_a_folder_is_named():
    import errno

    from geosr.cli.exits import _os_error_message

    exc = NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/a.tif/run")
    assert _os_error_message(exc) == (
        "/data/a.tif/run: Not a directory (a file lies on the way where a folder should be); choose another path"
    )
