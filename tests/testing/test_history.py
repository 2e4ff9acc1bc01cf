"""``assert_history_reads`` and ``check_history``: a store recorded by an older release, read by today's classes.

The store (``tests/support/history_v1``) is written once, by a child process; each test
reads it read-only with the classes of ``history_today`` and some of the upcasters.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventador as ev
from eventador.testing import assert_history_reads, check_history
from tests.support.history import FIX, TODAY, UPCASTERS, forget_upcasters, record_first_release


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_first_release(tmp_path_factory.mktemp("history") / "bank")


@pytest.fixture(autouse=True)
def _classes_alone() -> Iterator[None]:
    importlib.import_module(TODAY)
    forget_upcasters()
    yield
    forget_upcasters()


def test_a_required_field_added_without_upcaster_fails_naming_type_version_field_count_and_first_position(
    recorded: Path,
) -> None:
    with pytest.raises(AssertionError) as failed:
        assert_history_reads(recorded, modules=[TODAY, UPCASTERS])
    message = str(failed.value)
    assert message.splitlines()[0].startswith("FAILS: 2 stored event(s) of 1 (type, version) do not read")
    assert (
        "  hist.Withdrawn v1, field 'reason': 2 events do not read; the first: hist.Withdrawn (schema version 1) "
        "at position 4: field 'reason': stored at version 1, read by Withdrawn version 2" in message
    )
    # The stored fields today's classes no longer have are reported, not lost.
    assert message.endswith(
        "stored fields the classes no longer have (kept in the log, not read):\n  hist.Opened v1: nickname"
    )


def test_with_every_upcaster_the_whole_history_reads(recorded: Path) -> None:
    report = assert_history_reads(recorded, modules=[TODAY, UPCASTERS, FIX])
    assert report.ok and report.events == 10
    assert repr(report) == "HistoryReport(ok, 10 events, 6 stored field sets)"
    shapes = {(s.event_type, s.schema_version, s.fields): s for s in report.shapes}
    assert list(shapes) == [
        ("hist.Closed", 1, ("account_id", "why")),
        ("hist.Deposited", 1, ("account_id", "amount")),
        ("hist.Deposited", 2, ("account", "amount", "currency")),
        ("hist.Opened", 1, ("account_id", "nickname", "owner")),
        ("hist.Opened", 1, ("account_id", "owner")),  # the field dropped without a new version
        ("hist.Withdrawn", 1, ("account_id", "amount")),
    ]
    closed = shapes["hist.Closed", 1, ("account_id", "why")]
    assert (closed.reads_as, closed.class_label, closed.class_version) == (
        "hist.AccountClosed", f"{TODAY}:AccountClosed", 1
    )
    assert closed.upcasters == ("v1 -> hist.AccountClosed v1: Rename(old='why', new='reason')",)
    deposited = shapes["hist.Deposited", 1, ("account_id", "amount")]
    assert (deposited.events, deposited.first_position, deposited.checked, deposited.failing) == (3, 2, 3, 0)
    assert deposited.upcasters == (
        "v1 -> v2: Rename(old='account_id', new='account'), Add(name='currency', default='EUR')",
    )
    assert shapes["hist.Deposited", 2, ("account", "amount", "currency")].upcasters == ()
    assert shapes["hist.Opened", 1, ("account_id", "nickname", "owner")].unknown_fields == ("nickname",)
    assert report.unknown_fields == {("hist.Opened", 1): ("nickname",)}
    withdrawn = shapes["hist.Withdrawn", 1, ("account_id", "amount")]
    assert withdrawn.upcasters == ("v1 -> v2: Add(name='reason', default='not recorded')",)
    html = report._repr_html_()
    assert "ok: every stored event reads" in html and "<td>hist.AccountClosed v1</td>" in html


def test_without_upcasters_renamed_fields_and_types_do_not_read(recorded: Path) -> None:
    report = check_history(recorded, modules=[TODAY])
    failed = {(f.event_type, f.schema_version, f.field): (f.events, f.first_position) for f in report.failures}
    assert failed == {
        ("hist.Closed", 1, None): (1, 10),  # no class by the stored name: it would read as UnknownEvent
        ("hist.Deposited", 1, "account"): (3, 2),
        ("hist.Withdrawn", 1, "reason"): (2, 4),
    }
    assert not report.ok and report.failing_events == 6
    closed = next(f for f in report.failures if f.event_type == "hist.Closed")
    assert closed.message.startswith("hist.Closed at position 10: no class for this event type in this process")
    # Types without a class may be allowed (an imported event log has none).
    allowed = check_history(recorded, allow_unknown=True)
    assert {f.event_type for f in allowed.failures} == {"hist.Deposited", "hist.Withdrawn"}


def test_every_event_is_read_not_only_the_first_of_each_field_set(recorded: Path) -> None:
    """An upcaster that fails on some values only: a check of the first event misses it."""
    reasons = {"a1": "fee"}  # a2's withdrawal (position 9) has none

    def reason(data: dict[str, object]) -> dict[str, object]:
        data["reason"] = reasons[str(data["account_id"])]
        return data

    ev.upcaster("hist.Withdrawn", 1)(reason)
    importlib.import_module(UPCASTERS)
    judged = check_history(recorded, every_event=False)
    assert judged.ok
    assert judged.shapes[-1].upcasters == (f"v1 -> v2: {reason.__qualname__}()",)
    with pytest.raises(AssertionError, match=r"hist\.Withdrawn v1: 1 event does not read; the first: "
                       r"hist\.Withdrawn \(schema version 1\) at position 9: the upcaster failed: KeyError: 'a2'"):
        assert_history_reads(recorded)


def test_an_open_store_is_checked_as_it_is(recorded: Path) -> None:
    importlib.import_module(UPCASTERS)
    importlib.import_module(FIX)
    with ev.open_store(recorded, read_only=True) as store:
        report = assert_history_reads(store)
        assert not store.closed
    assert report.path == str(recorded)


def test_a_module_that_cannot_be_imported_is_named(recorded: Path) -> None:
    with pytest.raises(ev.InvalidInputError, match=r"no module named 'tests\.support\.no_such_module'"):
        check_history(recorded, modules=["tests.support.no_such_module"])


def _later(version: int) -> type[ev.Event]:
    """The class ``Later`` as a release at `version` defines it (the same fields in each)."""

    class Later(ev.Event, event_type="hist.test.Later", version=version):
        n: int

    return Later


def test_events_stored_by_a_newer_release_than_the_class_are_noted() -> None:
    with ev.open_store() as store:
        store.append("s", [_later(3)(n=1)])
        _later(2)  # the code was rolled back
        report = check_history(store)
    assert report.ok
    assert report.shapes[0].notes == ("stored at version 3, newer than the class's version 2",)
    assert "      note: stored at version 3, newer than the class's version 2" in str(report)
