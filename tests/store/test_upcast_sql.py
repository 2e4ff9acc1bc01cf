"""Typed SQL views show every stored schema version as today's class, upcasters applied in SQL.

Each test stores events under older classes (flushed while they were registered, so
their typed columns hold the old fields), then redefines the class with an upcaster,
and compares the typed view with ``read_all`` field by field.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador.codec import schema_of
from eventador.errors import SqlError
from eventador.upcasting import Add, Convert, Drop, Rename, Split, upcaster, upcasters

_names = itertools.count()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh event type prefix; its upcasters are removed afterwards."""
    name = f"up{next(_names)}"
    yield name
    for u in list(upcasters):
        if u.event_type.startswith(f"{name}."):
            upcasters.remove(u.event_type)


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ev.EventStore]:
    with (ev.open_store() if request.param == "memory" else ev.open_store(tmp_path / "store")) as s:
        yield s


def event_class(event_type: str, version: int, fields: dict[str, Any], defaults: dict[str, Any] | None = None) -> Any:
    """A class of `event_type` at `version`, defined as a notebook cell would (again)."""
    def body(ns: dict[str, Any]) -> None:
        ns["__annotations__"] = dict(fields)
        ns.update(defaults or {})

    return types.new_class("E", (ev.Event,), {"event_type": event_type, "version": version}, body)


def typed_rows(store: ev.EventStore, cls: Any) -> list[tuple[Any, ...]]:
    """The typed view of `cls`, by position."""
    names = schema_of(cls).names
    cols = ", ".join(f'"{n}"' for n in names)
    return store.sql(f'SELECT position, {cols} FROM "{cls.event_type}" ORDER BY position').fetchall()


def python_rows(store: ev.EventStore, cls: Any) -> list[tuple[Any, ...]]:
    """What ``read_all`` (upcasters applied) gives for the same type, by position."""
    names = schema_of(cls).names
    return [
        (r.position, *(getattr(r.event, n) for n in names)) for r in store.read_all() if r.event_type == cls.event_type
    ]


def assert_sql_agrees(store: ev.EventStore, cls: Any) -> list[tuple[Any, ...]]:
    rows = typed_rows(store, cls)
    assert rows == python_rows(store, cls)
    return rows


def test_rename_add_and_drop_show_old_events_in_todays_fields(store: ev.EventStore, prefix: str) -> None:
    t = f"{prefix}.Deposited"
    v1 = event_class(t, 1, {"account_id": str, "amount": int, "note": str})
    store.append("a", [v1(account_id="a1", amount=10, note="x"), v1(account_id="a2", amount=20, note="y")])
    store.flush()  # Parquet (or a memory segment) written while version 1 is the class
    upcaster(t, 1, Rename("account_id", "account"), Add("currency", "SEK"), Drop("note"))
    v2 = event_class(t, 2, {"account": str, "amount": int, "currency": str}, {"currency": "EUR"})
    assert assert_sql_agrees(store, v2) == [(1, "a1", 10, "SEK"), (2, "a2", 20, "SEK")]  # every row at version 1
    store.append("b", [v2(account="b1", amount=30, currency="USD")])  # a second version: the views change
    assert assert_sql_agrees(store, v2) == [(1, "a1", 10, "SEK"), (2, "a2", 20, "SEK"), (3, "b1", 30, "USD")]
    store.flush()
    assert assert_sql_agrees(store, v2) == [(1, "a1", 10, "SEK"), (2, "a2", 20, "SEK"), (3, "b1", 30, "USD")]
    assert store.sql(f'SELECT sum(amount) FROM "{t}"').fetchall() == [(60,)]
    # The events view keeps every row as stored, with the version it was written with.
    assert store.sql("SELECT position, schema_version FROM events ORDER BY position").fetchall() == [
        (1, 1), (2, 1), (3, 2)
    ]


def test_a_new_field_with_a_default_needs_no_upcaster(store: ev.EventStore, prefix: str) -> None:
    t = f"{prefix}.Opened"
    v1 = event_class(t, 1, {"owner": str})
    store.append("a", [v1(owner="ann")])
    store.flush()
    v2 = event_class(t, 2, {"owner": str, "currency": str, "limit": int | None}, {"currency": "EUR", "limit": None})
    store.append("b", [v2(owner="bob", currency="USD", limit=5)])
    store.flush()
    assert assert_sql_agrees(store, v2) == [(1, "ann", "EUR", None), (2, "bob", "USD", 5)]


def test_a_required_field_no_version_gives_is_an_error_not_null(store: ev.EventStore, prefix: str) -> None:
    """The issue's first case, in SQL: a renamed field without an upcaster never reads as NULL."""
    t = f"{prefix}.Deposited"
    v1 = event_class(t, 1, {"account_id": str, "amount": int})
    store.append("a", [v1(account_id="a1", amount=10)])
    store.flush()
    v2 = event_class(t, 2, {"account": str, "amount": int})
    store.append("b", [v2(account="b1", amount=5)])
    with pytest.raises(SqlError, match=rf"{t} \(schema version 1\) at position 1: field 'account': .*no upcaster") as e:
        store.sql(f'SELECT account FROM "{t}"').fetchall()
    assert f"ev.upcaster('{t}', 1, ...)" in str(e.value)
    with pytest.raises(ev.SchemaError):
        list(store.read_all())
    # Fields every version has still read, and the new rows alone read whole.
    assert store.sql(f'SELECT sum(amount) FROM "{t}"').fetchall() == [(15,)]
    assert store.sql(f'SELECT account FROM "{t}" WHERE position > 1').fetchall() == [("b1",)]


def test_rows_whose_every_field_is_now_a_constant_read_as_many_events_as_rows(tmp_path: Path) -> None:
    """An upcaster that drops every stored field and adds the new ones with defaults: the
    rows build from constants alone. That read once never ended, filling the memory, so it
    runs in a child process with its memory capped (a MemoryError there fails the test)."""
    script = textwrap.dedent(
        f"""
        import resource, types
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        import eventador as ev
        from eventador.upcasting import Add, Drop, upcaster

        def event_class(version, fields, defaults=None):
            def body(ns):
                ns["__annotations__"] = dict(fields)
                ns.update(defaults or {{}})
            return types.new_class("E", (ev.Event,), {{"event_type": "all.Constant", "version": version}}, body)

        v1 = event_class(1, {{"a": int}})
        with ev.open_store({str(tmp_path / "store")!r}) as store:
            store.append("s", [v1(a=1), v1(a=2), v1(a=3)])
            store.flush()
            upcaster("all.Constant", 1, Drop("a"), Add("b", 5), Add("c", "x"))
            v2 = event_class(2, {{"b": int, "c": str}})
            store.append("s", [v2(b=7, c="y")], expected_version=3)
            store.flush()
            read = [(r.position, r.event.b, r.event.c) for r in store.read_all()]
            assert read == [(1, 5, "x"), (2, 5, "x"), (3, 5, "x"), (4, 7, "y")], read
            rows = store.sql('SELECT position, b, c FROM "all.Constant" ORDER BY position').fetchall()
            assert rows == read, rows
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_convert_with_sql_retypes_a_field(store: ev.EventStore, prefix: str) -> None:
    t = f"{prefix}.Paid"
    v1 = event_class(t, 1, {"cents": int, "ref": int})
    store.append("a", [v1(cents=1234, ref=7), v1(cents=5, ref=8)])
    store.flush()
    upcaster(
        t, 1, Rename("cents", "amount"), Convert("amount", lambda c: c / 100, sql="CAST({amount} AS DOUBLE) / 100"),
        Convert("ref", str, sql="CAST({ref} AS VARCHAR)"),
    )
    v2 = event_class(t, 2, {"amount": float, "ref": str})
    store.append("b", [v2(amount=1.5, ref="R9")])
    store.flush()
    assert assert_sql_agrees(store, v2) == [(1, 12.34, "7"), (2, 0.05, "8"), (3, 1.5, "R9")]


def view_sql(store: ev.EventStore, view: str) -> str:
    (sql,) = store.sql("SELECT sql FROM duckdb_views() WHERE view_name = ?", [view]).fetchall()[0]
    return str(sql)


def test_a_type_whose_rows_hold_one_version_reads_them_with_no_case_over_versions(
    store: ev.EventStore, prefix: str
) -> None:
    """The CASE over versions costs a plain sum about a quarter of its speed: a type gets it
    only when its own rows hold several versions, whatever other types hold."""
    t, other = f"{prefix}.Deposited", f"{prefix}.Noted"
    d1 = event_class(t, 1, {"amount": int})
    n1 = event_class(other, 1, {"text": str})
    store.append("a", [d1(amount=1), n1(text="x")])
    store.flush()
    assert "_cv" not in view_sql(store, t)
    n2 = event_class(other, 2, {"text": str, "lang": str}, {"lang": "en"})
    store.append("b", [n2(text="y", lang="fr")])
    store.flush()
    assert "_cv" not in view_sql(store, t)  # only the other type's rows differ
    assert "_cv" in view_sql(store, other)
    assert assert_sql_agrees(store, d1) == [(1, 1)]
    assert assert_sql_agrees(store, n2) == [(2, "x", "en"), (3, "y", "fr")]


def test_segments_of_a_retyped_field_compact_into_one(store: ev.EventStore, prefix: str) -> None:
    """Two versions stored the field as int and as text: merging their segments keeps both."""
    t = f"{prefix}.Tagged"
    v1 = event_class(t, 1, {"tag": int})
    store.append("a", [v1(tag=7)])
    store.flush()
    upcaster(t, 1, Convert("tag", str, sql="CAST({tag} AS VARCHAR)"))
    v2 = event_class(t, 2, {"tag": str})
    store.append("b", [v2(tag="x")])
    store.flush()
    assert store.compact() == 1
    assert assert_sql_agrees(store, v2) == [(1, "7"), (2, "x")]


def test_python_only_upcasters_raise_on_their_rows_and_the_rest_reads(store: ev.EventStore, prefix: str) -> None:
    t = f"{prefix}.Paid"
    v1 = event_class(t, 1, {"amount": int, "currency": str})
    store.append("a", [v1(amount=1, currency="eur")])
    store.flush()
    upcaster(t, 1, Convert("currency", str.upper))  # no sql=: Python only
    v2 = event_class(t, 2, {"amount": int, "currency": str})
    store.append("b", [v2(amount=2, currency="USD")])
    with pytest.raises(SqlError, match=rf"{t} \(schema version 1\) at position 1: field 'currency': .*only in Python"):
        store.sql(f'SELECT currency FROM "{t}"').fetchall()
    assert store.sql(f'SELECT sum(amount) FROM "{t}"').fetchall() == [(3,)]  # a field SQL can compute
    assert store.sql(f'SELECT currency FROM "{t}" WHERE position = 2').fetchall() == [("USD",)]
    assert python_rows(store, v2) == [(1, 1, "EUR"), (2, 2, "USD")]

    @upcaster(t, 2)
    def shout(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": data["currency"] + "!"}

    v3 = event_class(t, 3, {"amount": int, "currency": str})
    store.append("c", [v3(amount=4, currency="SEK")])
    with pytest.raises(SqlError, match=r"field 'amount': .*'test_python_only.*shout'"):
        store.sql(f'SELECT sum(amount) FROM "{t}"').fetchall()
    assert store.sql(f'SELECT amount FROM "{t}" WHERE position = 3').fetchall() == [(4,)]


def test_a_renamed_type_shows_in_the_new_types_view(store: ev.EventStore, prefix: str) -> None:
    old, new = f"{prefix}.Credited", f"{prefix}.Deposited"
    before = event_class(old, 1, {"account_id": str, "amount": int})
    store.append("a", [before(account_id="a1", amount=10)])
    store.flush()
    upcaster(old, 1, Rename("account_id", "account"), to_type=new, to_version=2)
    after = event_class(new, 2, {"account": str, "amount": int})
    assert assert_sql_agrees(store, after) == [(1, "a1", 10)]  # every row at version 1
    assert store.sql(f'SELECT count(*) FROM "{old}"').fetchall() == [(0,)]
    store.append("a", [after(account="a1", amount=5)], expected_version=1)
    assert assert_sql_agrees(store, after) == [(1, "a1", 10), (2, "a1", 5)]
    store.flush()
    assert assert_sql_agrees(store, after) == [(1, "a1", 10), (2, "a1", 5)]
    # `events` keeps the stored type; the old class, still defined here, shows none of them.
    assert store.sql("SELECT event_type FROM events ORDER BY position").fetchall() == [(old,), (new,)]
    assert store.sql(f'SELECT count(*) FROM "{old}"').fetchall() == [(0,)]


def test_a_split_type_goes_to_the_view_its_sql_chooses(store: ev.EventStore, prefix: str) -> None:
    paid, card, cash = f"{prefix}.Paid", f"{prefix}.CardPaid", f"{prefix}.CashPaid"
    v1 = event_class(paid, 1, {"kind": str, "amount": int})
    store.append("a", [v1(kind="card", amount=1), v1(kind="cash", amount=2), v1(kind="card", amount=3)])
    store.flush()
    choose = Split(
        python=lambda d: card if d["kind"] == "card" else cash,
        sql=f"CASE WHEN {{kind}} = 'card' THEN '{card}' ELSE '{cash}' END",
    )
    upcaster(paid, 1, Rename("amount", "total"), to_type=choose)
    card_cls = event_class(card, 1, {"total": int})
    cash_cls = event_class(cash, 1, {"total": int, "till": str}, {"till": "main"})
    store.append("b", [cash_cls(total=9, till="back")])
    assert assert_sql_agrees(store, card_cls) == [(1, 1), (3, 3)]
    assert assert_sql_agrees(store, cash_cls) == [(2, 2, "main"), (4, 9, "back")]


def test_three_versions_across_a_reopen_some_flushed_under_each(tmp_path: Path, prefix: str) -> None:
    """Version 1 rows flushed under version 1, others left in the log and flushed after a
    reopen under version 2, version 2 rows, then version 3: one view, read_all's values."""
    t = f"{prefix}.Deposited"
    v1 = event_class(t, 1, {"account_id": str, "cents": int})
    store = ev.open_store(tmp_path / "first")
    store.append("a", [v1(account_id="a1", cents=100)])
    store.flush()
    store.append("a", [v1(account_id="a2", cents=250)], expected_version=1)  # only in the log
    shutil.copytree(tmp_path / "first", tmp_path / "copy")  # the log as a crash would leave it
    store.close()

    upcaster(t, 1, Rename("account_id", "account"))
    v2 = event_class(t, 2, {"account": str, "cents": int})
    with ev.open_store(tmp_path / "copy") as store:
        store.flush()  # the version 1 row of the log is flushed by version 2
        store.append("a", [v2(account="a3", cents=300)], expected_version=2)
        store.flush()
        upcaster(t, 2, Convert("cents", lambda c: c / 100, sql="CAST({cents} AS DOUBLE) / 100"),
                 Rename("cents", "amount"), Add("currency", "EUR"))
        v3 = event_class(t, 3, {"account": str, "amount": float, "currency": str})
        store.append("a", [v3(account="a4", amount=4.5, currency="USD")], expected_version=3)
        expected = [(1, "a1", 1.0, "EUR"), (2, "a2", 2.5, "EUR"), (3, "a3", 3.0, "EUR"), (4, "a4", 4.5, "USD")]
        assert assert_sql_agrees(store, v3) == expected
        store.flush()
        assert assert_sql_agrees(store, v3) == expected
        assert store.sql("SELECT schema_version FROM events ORDER BY position").fetchall() == [(1,), (1,), (2,), (3,)]


def test_an_event_that_did_not_decode_when_flushed_is_an_error_in_sql(tmp_path: Path, prefix: str) -> None:
    t = f"{prefix}.Opened"
    v1 = event_class(t, 1, {"owner_id": str})
    store = ev.open_store(tmp_path / "first")
    store.append("a", [v1(owner_id="o1")])
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    store.close()
    v2 = event_class(t, 2, {"owner": str})  # no upcaster yet: version 1 rows do not decode
    with ev.open_store(tmp_path / "copy") as store:
        store.flush()  # the flush keeps the event; its typed columns stay empty
        upcaster(t, 1, Rename("owner_id", "owner"))
        assert python_rows(store, v2) == [(1, "o1")]
        with pytest.raises(SqlError, match=rf"{t} \(schema version 1\) at position 1: the event did not fit"):
            store.sql(f'SELECT owner FROM "{t}"').fetchall()
        assert store.sql(f'SELECT count(*) FROM "{t}"').fetchall() == [(1,)]


# -- random chains of schema changes ----------------------------------------------------------

_ops = st.lists(st.sampled_from(["rename", "add", "drop", "retype"]), min_size=1, max_size=3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.lists(_ops, min_size=1, max_size=3),
    values=st.lists(st.integers(-1000, 1000), min_size=40, max_size=40),
    flushes=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_random_schema_chains_sql_equals_read_all_equals_the_final_schema(
    changes: list[list[str]], values: list[int], flushes: list[bool]
) -> None:
    """Stored events of every version, upcast, equal the same events written under the final
    schema (computed here from the changes), and the typed view equals read_all."""
    t = f"up{next(_names)}.Random"
    try:
        fields: dict[str, type] = {"f0": int, "f1": int}
        counter = itertools.count(2)
        pool = iter(values * 4)
        written: list[dict[str, Any]] = []  # each event's payload, moved along every change so far
        store = ev.open_store()
        for version, ops in enumerate([[], *changes], start=1):
            steps: list[Any] = []
            for op in ops:
                if op == "rename" and fields:
                    old = sorted(fields)[0]
                    new = f"f{next(counter)}"
                    fields[new] = fields.pop(old)
                    steps.append(Rename(old, new))
                    for data in written:
                        data[new] = data.pop(old)
                elif op == "drop" and len(fields) > 1:
                    gone = sorted(fields)[-1]
                    del fields[gone]
                    steps.append(Drop(gone))
                    for data in written:
                        data.pop(gone)
                elif op == "retype" and int in fields.values():
                    name = next(n for n in sorted(fields) if fields[n] is int)
                    fields[name] = str
                    steps.append(Convert(name, str, sql=f"CAST({{{name}}} AS VARCHAR)"))
                    for data in written:
                        data[name] = str(data[name])
                else:  # add
                    name, default = f"f{next(counter)}", next(pool)
                    fields[name] = int
                    steps.append(Add(name, default))
                    for data in written:
                        data[name] = default
            if steps:
                upcaster(t, version - 1, *steps)
            cls = event_class(t, version, fields)
            for part in range(2):
                batch = [{n: k(next(pool)) for n, k in fields.items()} for _ in range(2)]
                store.append(f"s{version}.{part}", [cls(**data) for data in batch])
                written.extend(batch)
                if part == 0 and flushes[version - 1]:
                    store.flush()  # some rows of this version in one segment, some in the next
            store.flush()  # before the class is defined again: the hot tier holds decoded instances
        final = [cls(**data) for data in written]
        assert [r.event for r in store.read_all()] == final
        assert_sql_agrees(store, cls)
    finally:
        upcasters.remove(t)
