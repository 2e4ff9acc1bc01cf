"""The command line: each command runs the library and prints; errors exit 1, usage errors 2."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import eventador as ev
from eventador.cli.common import TABLE_ROWS
from eventador.cli.main import DEMO_DIR, build_parser, main
from tests.support.domain import Deposited
from tests.support.holder import held_by_another_process
from tests.workers.import_crash_child import log

DATA = Path(__file__).resolve().parents[2] / "data"  # the real logs ship with the repository


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
    # Its tables print what DuckDB returns: balances as exact decimals, weeks as dates.
    balances = out.split("-- Five largest balances")[1].split("\n-- ")[0].splitlines()[-5:]
    assert all(re.fullmatch(r"acc-\d{4} +-?\d+\.\d\d", line.strip()) for line in balances), balances
    weeks = out.split("-- Events per week by type")[1].split("\n\n")[0].splitlines()[-1]
    assert re.match(r"\d{4}-\d\d-\d\d +bank\.", weeks.strip()), weeks

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
    with pytest.raises(SystemExit) as exc:
        main(["sql", "d", "q", "--limit", "-1"])
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
    code = "import sys; from eventador.cli.main import main; sys.exit(main(sys.argv[1:]))"
    with subprocess.Popen(
        [sys.executable, "-c", code, "sql", str(tmp_path / "big"), "SELECT * FROM events", "--limit", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.readline()
        child.stdout.close()  # like `| head -1`
        errors = child.stderr.read().decode()
        assert child.wait(timeout=60) == 0, errors
    assert "Traceback" not in errors


# -- the command line's output (issue 16, part 2) ---------------------------------------------------


def three_events(path: Path) -> ev.EventStore:
    """A store in `path`, still open for writing, holding three events."""
    store = ev.open_store(path)
    store.append("acc-1", [Deposited(account_id="acc-1", amount=Decimal("1.5"))])
    store.append("acc-2", [Deposited(account_id="acc-2", amount=Decimal(n)) for n in (2, 3)])
    return store


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"eventador {ev.__version__}"


def test_info_as_json_carries_everything_the_table_shows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_events(tmp_path / "s").close()
    assert main(["info", str(tmp_path / "s"), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert main(["info", str(tmp_path / "s")]) == 0
    table = capsys.readouterr().out
    for key in ("path", "streams", "events", "files", "hot_events", "bytes"):
        shown = info[key] if isinstance(info[key], str) else f"{info[key]:,}"
        assert f"{key:>12}: {shown}" in table
    assert info["streams"] == 2 and info["events"] == 3 and info["files"] == 1
    assert info["event_types"] == {"test.Deposited": 3} and "3  test.Deposited" in table
    assert info["views"] == []


def test_info_counts_the_bytes_the_log_holds_not_its_preallocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = three_events(tmp_path / "s")  # the writer is still open: its log segment is preallocated (1 MiB)
    try:
        store.info()  # its first query sets up the SQL views (and the catalog's own log grows)
        wal = list((tmp_path / "s" / "wal").glob("*.wal"))
        assert wal and wal[0].stat().st_size >= 1 << 20
        files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p not in wal]
        on_disk = sum(p.stat().st_size for p in files)
        held = len(wal[0].read_bytes().rstrip(b"\0"))
        assert store.info()["bytes"] == on_disk + held
        assert main(["info", str(tmp_path / "s"), "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["bytes"] == on_disk + held < 200_000  # was 1,061,804
    finally:
        store.close()


def test_a_table_is_bounded_and_says_how_many_rows_it_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    three_events(tmp_path / "s").close()
    query = "SELECT range AS n FROM range(100)"
    assert main(["sql", str(tmp_path / "s"), query]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].strip() == "n" and [int(x) for x in lines[1:-1]] == list(range(TABLE_ROWS))
    assert lines[-1] == f"({100 - TABLE_ROWS} more rows not shown of 100; --limit N shows N, --limit 0 all)"

    assert main(["sql", str(tmp_path / "s"), query, "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 5 + 1 and "95 more rows" in lines[-1]

    assert main(["sql", str(tmp_path / "s"), query, "--limit", "0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 101

    # JSON and CSV are for programs: all rows unless --limit says otherwise, and the note on stderr.
    assert main(["sql", str(tmp_path / "s"), query, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 100
    assert main(["sql", str(tmp_path / "s"), query, "--format", "csv", "--limit", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["n", "0", "1", "2"] and "97 more rows" in err


def test_null_prints_as_null_and_integers_stay_integers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_events(tmp_path / "s").close()
    query = "SELECT * FROM (VALUES (1, 'a', 1.5), (NULL, NULL, NULL)) t(i, s, f)"
    assert main(["sql", str(tmp_path / "s"), query]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows == [["i", "s", "f"], ["1", "a", "1.5"], ["NULL", "NULL", "NULL"]]
    assert main(["sql", str(tmp_path / "s"), query, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"i": 1, "s": "a", "f": 1.5}, {"i": None, "s": None, "f": None}]
    assert main(["sql", str(tmp_path / "s"), query, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["i,s,f", "1,a,1.5", ",,"]


def test_sql_prints_decimals_with_their_exact_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    amounts = [Decimal("12345678901234567.89"), Decimal("0.01")]  # a float has 17 digits: ...567.9 is lost
    with ev.open_store(tmp_path / "s") as store:
        store.append("acc-1", [Deposited(account_id="acc-1", amount=a) for a in amounts])
    query = 'SELECT sum(amount) AS total, CAST(min(amount) AS DECIMAL(20, 2)) AS least FROM "test.Deposited"'
    assert main(["sql", str(tmp_path / "s"), query, "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"total": 12345678901234567.900000000000, "least": 0.01' in out  # numbers, every digit
    assert json.loads(out, parse_float=Decimal) == [
        {"total": Decimal("12345678901234567.9"), "least": Decimal("0.01")}
    ]
    assert main(["sql", str(tmp_path / "s"), query, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["total,least", "12345678901234567.900000000000,0.01"]
    assert main(["sql", str(tmp_path / "s"), query]) == 0
    assert capsys.readouterr().out.split() == ["total", "least", "12345678901234567.900000000000", "0.01"]


def test_payload_bytes_print_as_their_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_events(tmp_path / "s").close()
    query = "SELECT position, payload FROM events ORDER BY position LIMIT 1"
    assert main(["sql", str(tmp_path / "s"), query]) == 0
    out = capsys.readouterr().out
    assert "bytearray" not in out and "\\x" not in out
    assert '"account_id": "acc-1"' in out and '"amount": "1.5"' in out
    assert main(["sql", str(tmp_path / "s"), query, "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)[0]["payload"]
    assert payload["account_id"] == "acc-1" and payload["amount"] == "1.5"
    assert main(["sql", str(tmp_path / "s"), "SELECT '\\xFF\\x00'::BLOB AS b, 'hi'::BLOB AS t"]) == 0
    assert capsys.readouterr().out.split() == ["b", "t", "\\xFF\\x00", "hi"]


def test_a_locked_store_gives_command_line_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text("case,activity,timestamp\nc1,a,2024-01-01T10:00:00Z\n")
    three_events(tmp_path / "s").close()
    with held_by_another_process(tmp_path / "s"):
        assert main(["import", str(tmp_path / "s"), str(csv)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is open for writing by pid" in err
        assert "read_only" not in err and "`eventador info`" in err and "`eventador import` again" in err
        assert main(["projection", "list", str(tmp_path / "s")]) == 1
        assert "`eventador projection` again" in capsys.readouterr().err


def test_demo_without_a_directory_builds_in_the_place_the_readme_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"./{DEMO_DIR}" in readme
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--accounts", "5"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / DEMO_DIR / "manifest.json").is_file()
    assert f"Building a demo bank in {tmp_path / DEMO_DIR}" in out
    assert f"delete it with: rm -r {DEMO_DIR}" in out


def test_demo_run_again_removes_only_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An empty directory of the user's: the demo builds in it, and a rerun keeps the directory.
    target = tmp_path / "mine"
    target.mkdir()
    assert main(["demo", str(target), "--accounts", "5"]) == 0
    inode = target.stat().st_ino
    assert main(["demo", str(target), "--accounts", "5"]) == 0
    assert target.stat().st_ino == inode
    capsys.readouterr()
    # Something the demo did not write: refused, and everything stays.
    (target / "notes.txt").write_text("mine")
    before = sorted(p.name for p in target.iterdir())
    assert main(["demo", str(target), "--accounts", "5"]) == 1
    err = capsys.readouterr().err
    assert "notes.txt" in err and "did not write" in err
    assert sorted(p.name for p in target.iterdir()) == before
    assert (target / "notes.txt").read_text() == "mine"
    with ev.open_store(target, read_only=True) as store:
        assert store.info()["streams"] == 5
    # A file is not a directory to build in.
    assert main(["demo", str(target / "notes.txt")]) == 1
    assert "is a file" in capsys.readouterr().err


# -- eventador import (issue 16, part 3) ---------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_import_reads_a_plain_csv_without_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write(tmp_path / "log.csv", "Case ID,Activity,Timestamp,who\nc1,a,2024-01-01T10:00:00+01:00,ann\n"
                                       "c1,b,2024-01-01T11:00:00+01:00,bob\nc2,a,2024-01-02T09:00:00Z,ann\n")
    assert main(["import", str(tmp_path / "s"), str(csv)]) == 0
    assert "imported 3 events in 2 streams" in capsys.readouterr().out
    with ev.open_store(tmp_path / "s", read_only=True) as store:
        c1 = store.read_stream("c1")
        assert [r.event_type for r in c1] == ["a", "b"]
        assert c1[0].occurred_at.isoformat() == "2024-01-01T09:00:00+00:00"
        assert c1[1].event.data == {"who": "bob"}


def test_import_with_unclear_columns_lists_them_and_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write(tmp_path / "log.csv", "ticket,step,at\nt1,open,2024-01-01T10:00:00Z\n")
    assert main(["import", str(tmp_path / "s"), str(csv)]) == 1
    err = capsys.readouterr().err
    assert "no column is named like a case id" in err and "'ticket', 'step', 'at'" in err
    assert "--case-id COLUMN, --activity COLUMN, --timestamp COLUMN" in err
    assert not (tmp_path / "s").exists()
    both = write(tmp_path / "both.csv", "case,case_id,activity,timestamp\nc,c,a,2024-01-01T10:00:00Z\n")
    assert main(["import", str(tmp_path / "s"), str(both)]) == 1
    assert "could be any of the columns 'case', 'case_id'" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "s"), str(csv), "--case-id", "ticket", "--activity", "step",
                 "--timestamp", "at"]) == 0


def test_a_failed_import_names_the_line_and_column_and_leaves_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Line 1 the header, line 3 blank, lines 4-5 one row (a quoted line break): the bad time is on line 6.
    csv = write(tmp_path / "log.csv", 'case,activity,timestamp,note\nc1,a,2024-01-01T10:00:00Z,x\n\n'
                                       'c1,b,2024-01-01T11:00:00Z,"two\nlines"\nc2,a,yesterday,y\n')
    assert main(["import", str(tmp_path / "new"), str(csv)]) == 1
    err = capsys.readouterr().err
    assert "log.csv: line 6, column 'timestamp': 'yesterday' is missing or not a time" in err
    assert not (tmp_path / "new").exists()

    empty_case = write(
        tmp_path / "case.csv", "case,activity,timestamp\nc1,a,2024-01-01T10:00:00Z\n,b,2024-01-01T11:00:00Z\n"
    )
    assert main(["import", str(tmp_path / "new"), str(empty_case)]) == 1
    assert "case.csv: line 3, column 'case': the case id is empty" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()

    (tmp_path / "empty").mkdir()  # the user's own empty directory stays, empty
    assert main(["import", str(tmp_path / "empty"), str(empty_case)]) == 1
    assert list((tmp_path / "empty").iterdir()) == []


def test_import_refuses_a_directory_that_is_not_a_store_and_a_log_without_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write(tmp_path / "log.csv", "case,activity,timestamp\nc1,a,2024-01-01T10:00:00Z\n")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    assert main(["import", str(other), str(csv)]) == 1
    assert "photos exists and is not an eventador store" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]

    header = write(tmp_path / "header.csv", "case,activity,timestamp\n")
    assert main(["import", str(tmp_path / "s"), str(header)]) == 1
    assert "header.csv: no events (it has the columns case, activity, timestamp but no rows)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_import_refuses_naive_times_unless_given_a_zone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write(tmp_path / "log.csv", "case,activity,timestamp\nc1,a,2024-01-15 10:00\nc1,b,2024-07-15 10:00\n")
    assert main(["import", str(tmp_path / "s"), str(csv)]) == 1
    err = capsys.readouterr().err
    assert "line 2, column 'timestamp': '2024-01-15 10:00' does not say its time zone" in err and "--timezone" in err
    assert not (tmp_path / "s").exists()
    assert main(["import", str(tmp_path / "s"), str(csv), "--timezone", "Europe/Amsterdam"]) == 0
    with ev.open_store(tmp_path / "s", read_only=True) as store:
        winter, summer = (r.occurred_at.isoformat() for r in store.read_stream("c1"))
    assert (winter, summer) == ("2024-01-15T09:00:00+00:00", "2024-07-15T08:00:00+00:00")
    assert main(["import", str(tmp_path / "t"), str(csv), "--timezone", "Mars/Olympus"]) == 1
    assert "unknown time zone 'Mars/Olympus'" in capsys.readouterr().err
