"""A bad `--window-start` / `--window-end` is a one-line usage error naming the option and a
non-zero exit, found where the option is read: before the home is made or any step runs, never a
pandas traceback from inside the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoprec.cli import cli


@pytest.mark.parametrize("command", [["run"], ["churn-run"], ["validate", "events.csv"]])
@pytest.mark.parametrize("option, value, fault", [
    ("--window-start", "not-a-date", "Unknown datetime string format"),
    ("--window-end", "2026-13-45", "month must be in 1..12"),
    ("--window-start", "nan", "give '' for an open window"),
])
def test_a_bad_window_is_a_usage_error_naming_the_option(tmp_path: Path, command: list[str], option: str,
                                                         value: str, fault: str) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(cli, [*command, option, value, "--home", str(home)])

    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': {value!r} is not a date-time" in result.output
    assert fault in result.output
    assert not isinstance(result.exception, ValueError) and "Traceback" not in result.output
    assert not home.exists()  # refused before anything ran


def test_the_entry_point_prints_one_error_line_and_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "from shoprec.cli import main; main()", "run",
                           "--window-start", "not-a-date", "--home", str(tmp_path / "home")],
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: Invalid value for '--window-start': 'not-a-date' is not a date-time "
                      "(e.g. 2026-03-01 or 2026-03-01T12:00:00Z; '' for open): Unknown datetime "
                      "string format, unable to parse: not-a-date"]
    assert "Traceback" not in done.stderr and "pandas" not in done.stderr


@pytest.mark.parametrize("value", ["", "2026-03-01", "2026-03-01T12:00:00Z"])
def test_a_good_window_passes_the_option(tmp_path: Path, value: str) -> None:
    # validate on a file that is not there: the window is accepted, the run then fails on the file.
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "missing.csv"), "--window-start", value,
                                      "--home", str(tmp_path / "home")])

    assert "Invalid value" not in result.output
    assert result.exit_code != 0 and "missing.csv" in str(result.exception or result.output)
