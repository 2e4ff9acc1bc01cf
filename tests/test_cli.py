"""The command line: each command runs the library and prints; errors exit 1, usage errors 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import eventador as ev
from eventador.cli import build_parser, main
from tests.import_crash_child import log

DATA = Path(__file__).resolve().parent.parent / "data"  # the real logs ship with the repository


def test_every_command_has_help_text() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        helps = [a.help for a in subparsers._choices_actions if a.dest == name]
        assert helps and helps[0], f"command {name!r} has no help"
        assert sub.format_help().strip()


def test_demo_builds_a_store_that_info_and_sql_can_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "demo"
    assert main(["demo", str(target), "--accounts", "40"]) == 0
    out = capsys.readouterr().out
    assert "40 accounts" in out and "bank.MoneyDeposited" in out

    assert main(["info", str(target)]) == 0
    assert "streams: 40" in capsys.readouterr().out

    assert main(["sql", str(target), "SELECT count(DISTINCT stream_id) AS n FROM events", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 40}]

    assert main(["sql", str(target), "SELECT 1 AS a, 2 AS b", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["a,b", "1,2"]

    # Running the demo again replaces its own store, never another directory.
    assert main(["demo", str(target), "--accounts", "10"]) == 0
    capsys.readouterr()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["demo", str(other)]) == 1
    assert "not a demo store" in capsys.readouterr().err
    assert (other / "keep.txt").exists()


def test_errors_print_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eventador: error: no eventador store") and err.count("\n") == 1
    main(["demo", str(tmp_path / "d"), "--accounts", "5"])
    capsys.readouterr()
    assert main(["sql", str(tmp_path / "d"), "SELECT nope"]) == 1
    assert "SQL error" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["sql", "--format", "xml", "d", "q"])
    assert exc.value.code == 2


def test_import_writes_one_stream_per_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(tmp_path / "fines"), str(DATA / "roadtraffic100traces.xes")]) == 0
    assert "imported 390 events in 100 streams" in capsys.readouterr().out
    assert main(["sql", str(tmp_path / "fines"), "SELECT count(*) AS n FROM \"Create Fine\"", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "100"]
    assert main(["import", str(tmp_path / "fines2"), str(tmp_path / "missing.csv")]) == 1
    assert "missing.csv" in capsys.readouterr().err


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "big") as store:  # output well past a pipe's 64 KB buffer
        store.import_dataframe(log(5_000), stream_id="case", event_type="activity", occurred_at="at")
    code = "import sys; from eventador.cli import main; sys.exit(main(sys.argv[1:]))"
    with subprocess.Popen(
        [sys.executable, "-c", code, "sql", str(tmp_path / "big"), "SELECT * FROM events", "--format", "table"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.readline()
        child.stdout.close()  # like `| head -1`
        errors = child.stderr.read().decode()
        assert child.wait(timeout=60) == 0, errors
    assert "Traceback" not in errors
