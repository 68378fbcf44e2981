"""The ``clcae`` command (clcae/console.py): every subcommand runs its script's own parser and main, so flags, help
and exit statuses are the script's; ``--version``, ``help SUB``, unknown subcommands; the installed entry point."""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clcae import __version__, console
from clcae.pretrained import SYNTHFACES_GENERATOR, shipped

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_COMMANDS = [name for name, c in console.COMMANDS.items() if c.script is not None]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        status = console.main(argv)
    except SystemExit as e:  # argparse's --help / usage errors
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_every_script_has_a_subcommand():
    """Each script with a main(argv) is reachable (ship_synthfaces.sh is a shell recipe, not a command)."""
    scripts = {p.name for p in (ROOT / "scripts").glob("*.py")}
    assert scripts == {console.COMMANDS[n].script for n in SCRIPT_COMMANDS}
    for name in ("demo", "invert", "edit", "eval", "align", "photo", "train", "train-generator", "generate",
                 "convert", "doctor", "app"):
        assert name in console.COMMANDS, name


@pytest.mark.parametrize("name", SCRIPT_COMMANDS)
def test_help_is_the_scripts_help(name, capsys):
    """``clcae help NAME`` prints exactly what ``python scripts/FILE --help`` prints, named ``clcae NAME``."""
    status, out, _ = _run(["help", name], capsys)
    assert status == 0
    assert out.startswith(f"usage: clcae {name} ")
    script = console.load_script(console.COMMANDS[name].script)
    saved = sys.argv[0]
    sys.argv[0] = f"clcae {name}"
    try:
        with pytest.raises(SystemExit):
            script.main(["--help"])
    finally:
        sys.argv[0] = saved
    expected = capsys.readouterr().out
    assert out == expected
    assert sys.argv[0] == saved  # the program name is restored after the subcommand


def test_usage_errors_are_the_scripts(capsys):
    status, _, err = _run(["generate", "--seeds", "0-1"], capsys)  # --generator and --out are required
    assert status == 2 and "usage: clcae generate" in err and "--generator" in err
    status, _, err = _run(["invert", "--no-such-flag"], capsys)
    assert status == 2 and "unrecognized arguments: --no-such-flag" in err


def test_version_usage_and_unknown(capsys):
    status, out, _ = _run(["--version"], capsys)
    assert status == 0 and out.startswith(f"clcae {__version__} (torch ")
    status, out, _ = _run([], capsys)
    assert status == 2 and "subcommands:" in out
    status, out, _ = _run(["--help"], capsys)
    assert status == 0 and all(f"  {name} " in out for name in console.COMMANDS)
    status, _, err = _run(["frobnicate"], capsys)
    assert status == 2 and "unknown subcommand 'frobnicate'" in err


@pytest.mark.skipif(shipped(SYNTHFACES_GENERATOR) is None, reason="the shipped generator is not in pretrained/")
def test_generate_runs_the_script(tmp_path, capsys):
    """A real run through the command: the same files the script writes."""
    out = tmp_path / "gen"
    status, _, _ = _run(["generate", "--generator", str(shipped(SYNTHFACES_GENERATOR)), "--seeds", "0-1",
                         "--device", "cpu", "--out", str(out)], capsys)
    assert status == 0
    assert Image.open(out / "grid.png").size[0] > 0
    assert (out / "seed00000.png").is_file() and (out / "seed00001.png").is_file() and (out / "latents.pt").is_file()


def test_console_script_entry_point():
    """``pip install -e .`` declares the command; where it is on the PATH, it runs."""
    declared = {e.value for d in importlib.metadata.distributions() if d.metadata["Name"] == "clcae"
                for e in d.entry_points if e.group == "console_scripts" and e.name == "clcae"}
    if not declared:  # installed before the entry point was added
        pytest.skip("the installed metadata predates the entry point: run pip install -e . again")
    assert declared == {"clcae.console:console_entry"}
    exe = shutil.which("clcae")
    command = [exe] if exe else [sys.executable, "-m", "clcae"]
    result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"clcae {__version__}"), result
