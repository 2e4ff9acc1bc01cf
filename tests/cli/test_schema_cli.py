"""``eventador schema DIR``: what a store holds, and whether today's classes read it (exit 0) or not (exit 1)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventador.cli.main import main
from tests.support.history import FIX, TODAY, UPCASTERS, forget_upcasters, record_first_release
from tests.support.holder import held_by_another_process


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_first_release(tmp_path_factory.mktemp("history") / "bank")


@pytest.fixture(autouse=True)
def _classes_alone() -> Iterator[None]:
    importlib.import_module(TODAY)
    forget_upcasters()
    yield
    forget_upcasters()


def test_the_table_lists_types_versions_field_sets_and_upcasters_and_exits_1_on_what_does_not_read(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", str(recorded), "--module", TODAY, "--module", UPCASTERS]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{recorded}: 10 events of 4 event type(s)"
    deposited = out.split("\nhist.Deposited\n")[1].split("\n\n")[0].splitlines()
    assert deposited == [
        "  v1  3 events from position 2  fields: account_id, amount",
        "      upcast v1 -> v2: Rename(old='account_id', new='account'), Add(name='currency', default='EUR')",
        f"      reads as hist.Deposited v2 ({TODAY}:Deposited)",
        "      ok: its first event reads",
        "  v2  1 event from position 8  fields: account, amount, currency",
        f"      reads as hist.Deposited v2 ({TODAY}:Deposited)",
        "      ok: its first event reads",
    ]
    assert "      upcast v1 -> hist.AccountClosed v1: Rename(old='why', new='reason')\n" in out
    assert "  v1  2 events from position 1  fields: account_id, nickname, owner\n" in out
    assert "      kept in the log, not in the class: nickname\n" in out
    assert "  hist.Withdrawn v1, field 'reason': 2 events do not read; the first: hist.Withdrawn (schema version 1) " \
        "at position 4: field 'reason'" in out


def test_exit_0_once_every_stored_event_reads(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    modules = ["--module", TODAY, "--module", UPCASTERS, "--module", FIX]
    assert main(["schema", str(recorded), *modules, "--every-event"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("ok: every stored event reads under this process's classes (each stored event read)")
    assert "      ok: all 3 read\n" in out


def test_json_holds_every_field_set_and_failure(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", str(recorded), "--module", TODAY, "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["events"], report["every_event"]) == (False, 10, False)
    first = report["shapes"][0]
    assert first == {
        "event_type": "hist.Closed", "schema_version": 1, "fields": ["account_id", "why"], "events": 1,
        "first_position": 10, "upcasters": [], "reads_as": "hist.Closed", "class_label": None,
        "class_version": None, "unknown_fields": [], "defaulted_fields": [], "checked": 1, "failing": 1,
        "error": first["error"], "notes": [],
    }
    failures = [(f["event_type"], f["schema_version"], f["field"], f["events"], f["first_position"])
                for f in report["failures"]]
    assert failures == [
        ("hist.Closed", 1, None, 1, 10),
        ("hist.Deposited", 1, "account", 3, 2),
        ("hist.Withdrawn", 1, "reason", 2, 4),
    ]
    assert "at position 2: field 'account'" in report["failures"][1]["message"]


def test_it_reads_while_another_process_writes(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    modules = ["--module", TODAY, "--module", UPCASTERS, "--module", FIX]
    with held_by_another_process(recorded):
        assert main(["schema", str(recorded), *modules]) == 0
    assert "ok: every stored event reads" in capsys.readouterr().out


def test_a_module_that_cannot_be_imported_exits_1_naming_it(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", str(recorded), "--module", "no_such_module_here"]) == 1
    assert "no module named 'no_such_module_here'" in capsys.readouterr().err
    assert main(["schema", str(recorded.parent / "nothing")]) == 1
    assert "no eventador store at" in capsys.readouterr().err
