"""Projections and read models: live SQL views, SqlProjection, Python Projection, ProjectionRunner."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import eventador as ev
from eventador import (
    Lag,
    Projection,
    ProjectionNameError,
    ProjectionRunner,
    Retry,
    SqlProjection,
    batch_view_name,
    list_projections,
)
from eventador.projections import rebuild_projection
from eventador.projections.runner import human_duration
from eventador.testing import StoreFactory
from tests.support.domain import Deposited, Withdrawn, deposited, opened, withdrawn

# -- a small bank, and its read model three ways --------------------------------------------

BALANCES_SETUP = """
    CREATE TABLE balances (
        account_id VARCHAR PRIMARY KEY,
        balance DECIMAL(38, 12) NOT NULL,
        events BIGINT NOT NULL
    )
"""
BALANCES_APPLY = """
    INSERT INTO balances
    SELECT account_id, sum(amount), count(*) FROM (
        SELECT account_id, amount FROM new_test_Deposited
        UNION ALL
        SELECT account_id, -amount FROM new_test_Withdrawn
    ) GROUP BY account_id
    ON CONFLICT (account_id) DO UPDATE SET
        balance = balance + excluded.balance, events = events + excluded.events
"""


def balances(name: str = "balances", **options: Any) -> SqlProjection:
    setup = BALANCES_SETUP.replace("balances", name, 1)
    apply = BALANCES_APPLY.replace("INTO balances", f"INTO {name}")
    return SqlProjection(name, setup_sql=setup, apply_sql=apply, **options)


def fold(store: ev.EventStore, upto: int | None = None) -> dict[str, tuple[Decimal, int]]:
    """The read model as a plain Python fold over the log."""
    out: dict[str, tuple[Decimal, int]] = {}
    for r in store.read_all(to_position=upto):
        e = r.event
        if isinstance(e, (Deposited, Withdrawn)):
            sign = 1 if isinstance(e, Deposited) else -1
            balance, n = out.get(e.account_id, (Decimal(0), 0))
            out[e.account_id] = (balance + sign * e.amount, n + 1)
    return out


def table(store: ev.EventStore, name: str = "balances") -> dict[str, tuple[Decimal, int]]:
    rows = store.sql(f"SELECT account_id, balance, events FROM {name}").fetchall()
    return {a: (Decimal(b), int(n)) for a, b, n in rows}


def checkpoint_row(store: ev.EventStore, name: str) -> int | None:
    con = store.connect()
    try:
        rows = con.execute("SELECT position FROM projection_checkpoints WHERE name = ?", [name]).fetchall()
    finally:
        con.close()
    return int(rows[0][0]) if rows else None


def fill(store: ev.EventStore, accounts: int = 3, rounds: int = 4) -> None:
    for a in range(accounts):
        store.append(f"acc-{a}", [opened(f"acc-{a}")])
    for r in range(rounds):
        for a in range(accounts):
            store.append(f"acc-{a}", [deposited(str(10 + r + a), f"acc-{a}"), withdrawn("1.50", f"acc-{a}")])


class Totals(Projection[dict[str, Decimal]]):
    """Deposits per account, in Python."""

    projection_id = "totals"
    interested_event_types = (Deposited,)

    def __init__(self) -> None:
        self.totals: dict[str, Decimal] = {}
        self.seen: list[str] = []

    @property
    def read_model(self) -> dict[str, Decimal]:
        return self.totals

    def handle(self, event: ev.Event) -> bool:
        assert isinstance(event, Deposited)
        self.seen.append(event.event_type)
        self.totals[event.account_id] = self.totals.get(event.account_id, Decimal(0)) + event.amount
        return True

    def reset(self) -> None:
        self.totals = {}


def deposits_by_account(store: ev.EventStore) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for r in store.read_all(event_types=[Deposited]):
        out[r.event.account_id] = out.get(r.event.account_id, Decimal(0)) + r.event.amount
    return out


# -- live views -------------------------------------------------------------------------------


def test_live_view_is_current_and_kept_with_the_store(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with ev.open_store(path) as store:
        fill(store, accounts=2, rounds=1)
        view = store.create_view(
            "deposit_totals", 'SELECT account_id, sum(amount) AS total FROM "test.Deposited" GROUP BY 1'
        )
        assert view.name == "deposit_totals"
        store.append("acc-0", [deposited("5", "acc-0")])
        totals = dict(store.sql("SELECT * FROM deposit_totals").fetchall())
        assert totals == {"acc-0": Decimal("15"), "acc-1": Decimal("11")}
        assert dict(store.as_of(3).sql("SELECT * FROM deposit_totals").fetchall()) == {"acc-0": Decimal("10")}
    with ev.open_store(path) as store:
        assert [v.name for v in store.views()] == ["deposit_totals"]
        assert dict(store.sql("SELECT * FROM deposit_totals").fetchall())["acc-0"] == Decimal("15")
    with ev.open_store(path, read_only=True) as reader:
        assert [v.name for v in reader.views()] == ["deposit_totals"]
        assert dict(reader.sql("SELECT * FROM deposit_totals").fetchall())["acc-1"] == Decimal("11")


def test_live_view_replace_and_drop(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    fill(store, accounts=1, rounds=1)
    store.create_view("n_events", "SELECT count(*) AS n FROM events")
    with pytest.raises(ProjectionNameError, match="replace=True"):
        store.create_view("n_events", "SELECT 1 AS n")
    store.create_view("n_events", "SELECT count(*) * 10 AS n FROM events", replace=True)
    assert store.sql("SELECT n FROM n_events").fetchall() == [(30,)]
    store.drop_view("n_events")
    assert store.views() == []
    with pytest.raises(ev.InvalidInputError, match="n_events"):
        store.sql("SELECT * FROM n_events")
    with pytest.raises(ev.InvalidInputError, match="no live view"):
        store.drop_view("n_events")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("1abc", "SQL identifier"),
        ("my-view", "SQL identifier"),
        ("events", "built-in view"),
        ("EVENTS", "built-in view"),
        ("ProjPing", "typed view of event type 'ProjPing'"),
        ("projection_checkpoints", "table in the store's database"),
        ("new_things", "reserved"),
        ("_private", "identifier"),
    ],
)
def test_bad_view_name_raises_projection_name_error(name: str, why: str) -> None:
    class ProjPing(ev.Event, event_type="ProjPing"):
        n: int

    with ev.open_store() as store:
        store.append("p", [ProjPing(n=1)])
        ProjectionRunner(store, [Totals()]).run_until_caught_up()  # makes the checkpoint table
        with pytest.raises(ProjectionNameError, match=why) as info:
            store.create_view(name, "SELECT 1 AS x")
        assert isinstance(info.value, ev.ProjectionError) and isinstance(info.value, ValueError)
        assert info.value.projection == name
        assert store.views() == []


@pytest.mark.parametrize(
    ("sql", "duckdb_says"),
    [
        ("SELEKT * FROM events", "syntax error"),
        ("SELECT * FROM no_such_table", "no_such_table does not exist"),
        ("SELECT no_such_column FROM events", "no_such_column"),
    ],
)
def test_bad_view_sql_raises_projection_error_quoting_duckdb(tmp_path: Path, sql: str, duckdb_says: str) -> None:
    with ev.open_store(tmp_path / "store") as store:
        with pytest.raises(ev.ProjectionError, match=duckdb_says) as info:
            store.create_view("broken", sql)
        assert info.value.projection == "broken"
        assert store.views() == []
    with ev.open_store(tmp_path / "store") as store:
        assert store.views() == []


def test_a_view_is_one_select(store: ev.EventStore) -> None:
    with pytest.raises(ev.ProjectionError, match="one SELECT"):
        store.create_view("two", "SELECT 1; SELECT 2")
    with pytest.raises(ev.ProjectionError, match="one SELECT"):
        store.create_view("ddl", "CREATE TABLE t (x INT)")


def test_views_on_a_read_only_store_cannot_be_made(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store") as store:
        fill(store, accounts=1, rounds=1)
    with ev.open_store(tmp_path / "store", read_only=True) as reader, pytest.raises(ev.ReadOnlyError):
        reader.create_view("x", "SELECT 1 AS x")


# -- SqlProjection ----------------------------------------------------------------------------


def test_sql_projection_equals_a_python_fold(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    fill(store)
    runner = ProjectionRunner(store, [balances()])
    runner.run_until_caught_up()
    assert table(store) == fold(store)
    fill(store, rounds=2)
    runner.run_until_caught_up()
    assert table(store) == fold(store)
    assert checkpoint_row(store, "balances") == store.last_position
    runner.close()


def test_small_batches_commit_each_with_its_checkpoint(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    fill(store, rounds=5)
    with ProjectionRunner(store, [balances()], batch_size=2) as runner:
        runner.run_until_caught_up()
        assert table(store) == fold(store)
        assert runner.status().set_index("name").loc["balances", "checkpoint"] == store.last_position


def test_batch_views_follow_the_naming_rule() -> None:
    assert batch_view_name("Deposited") == "new_Deposited"
    assert batch_view_name("bank.MoneyDeposited") == "new_bank_MoneyDeposited"
    assert batch_view_name("a-b c") == "new_a_b_c"


def test_new_events_has_the_columns_of_events_and_event_types_narrow_it() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=2)
        seen = SqlProjection(
            "seen",
            setup_sql="CREATE TABLE seen AS SELECT * FROM events LIMIT 0",
            apply_sql="INSERT INTO seen SELECT * FROM new_events",
            event_types=[Deposited, "test.Opened"],
        )
        ProjectionRunner(store, [seen], batch_size=2).run_until_caught_up()
        got = store.sql("SELECT * EXCLUDE (data) FROM seen ORDER BY position").fetchall()
        want = store.sql(
            "SELECT * EXCLUDE (data) FROM events WHERE event_type IN ('test.Deposited', 'test.Opened') "
            "ORDER BY position"
        ).fetchall()
        assert got == want and len(got) == 3


def test_a_projection_over_types_with_no_events_yet_picks_them_up_later() -> None:
    with ev.open_store() as store:
        store.append("acc-0", [opened("acc-0")])  # no Deposited, no Withdrawn yet: their views are empty
        runner = ProjectionRunner(store, [balances()])
        runner.run_until_caught_up()
        assert table(store) == {}
        store.append("acc-0", [deposited("3", "acc-0"), withdrawn("1", "acc-0")])
        runner.run_until_caught_up()
        assert table(store) == {"acc-0": (Decimal("2"), 2)}
        runner.close()


def test_setup_sql_error_names_the_projection_and_leaves_nothing() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=1)
        broken = SqlProjection("broken", setup_sql="CREATE TABLE broken (x INTEGR)", apply_sql="SELECT 1")
        runner = ProjectionRunner(store, [broken])
        with pytest.raises(ev.ProjectionError, match=r"'broken'.*setup_sql failed.*INTEGR") as info:
            runner.run_until_caught_up()
        assert info.value.projection == "broken"
        assert checkpoint_row(store, "broken") == 0
        assert store.sql("SELECT count(*) FROM duckdb_schemas() WHERE schema_name LIKE 'broken%'").fetchall() == [(0,)]
        assert list_projections(store).set_index("name").loc["broken", "version"] is pd.NA


def test_sql_syntax_errors_are_found_when_the_projection_is_made() -> None:
    with pytest.raises(ev.ProjectionError, match=r"apply_sql does not parse.*syntax error"):
        SqlProjection("p", setup_sql="CREATE TABLE p (x INT)", apply_sql="INSERT INTO p SELEKT 1")
    with pytest.raises(ev.ProjectionError, match="must not BEGIN or COMMIT"):
        SqlProjection("p", setup_sql="CREATE TABLE p (x INT)", apply_sql="INSERT INTO p VALUES (1); COMMIT")
    with pytest.raises(ProjectionNameError, match="identifier"):
        SqlProjection("my projection", setup_sql="CREATE TABLE p (x INT)", apply_sql="SELECT 1")


def _notes(name: str = "notes", **options: Any) -> SqlProjection:
    # A data-dependent failure: a note that is not a number cannot be cast.
    return SqlProjection(
        name,
        setup_sql=f"CREATE TABLE {name} (position BIGINT, n INTEGER)",
        apply_sql=f"INSERT INTO {name} SELECT position, CAST(note AS INTEGER) FROM new_test_Deposited",
        **options,
    )


def _noted(store: ev.EventStore, notes: list[str]) -> None:
    for note in notes:
        store.append("acc-1", [deposited("1", note=note)])


def test_apply_sql_error_stops_with_model_and_checkpoint_unchanged(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    _noted(store, ["1", "2"])
    runner = ProjectionRunner(store, [_notes()])
    runner.run_until_caught_up()
    before = store.sql("SELECT * FROM notes ORDER BY 1").fetchall()
    _noted(store, ["3", "boom", "5"])
    with pytest.raises(ev.ProjectionError, match=r"'notes'.*apply_sql failed.*Conversion Error.*boom") as info:
        runner.run_until_caught_up()
    assert info.value.projection == "notes"
    assert store.sql("SELECT * FROM notes ORDER BY 1").fetchall() == before
    assert checkpoint_row(store, "notes") == 2
    status = runner.status().set_index("name").loc["notes"]
    assert status["state"] == "failed" and "boom" in status["last_error"] and status["errors"] == 1
    errors = store.sql("SELECT projection, policy, error FROM projection_errors").fetchall()
    assert errors[0][:2] == ("notes", "stop") and "boom" in errors[0][2]
    runner.close()


def test_apply_sql_error_skip_leaves_out_only_the_failing_events(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    _noted(store, ["1", "2", "x3", "4", "5", "6", "bad", "8", "9"])
    with ProjectionRunner(store, [_notes(on_error="skip")]) as runner:
        runner.run_until_caught_up()
        assert [n for _, n in store.sql("SELECT * FROM notes ORDER BY 1").fetchall()] == [1, 2, 4, 5, 6, 8, 9]
        skipped = store.sql("SELECT position, stream_id, event_type, policy FROM projection_errors ORDER BY 1")
        assert skipped.fetchall() == [(3, "acc-1", "test.Deposited", "skip"), (7, "acc-1", "test.Deposited", "skip")]
        assert checkpoint_row(store, "notes") == 9
        assert runner.status().set_index("name").loc["notes", "errors"] == 2
        _noted(store, ["10", "y"])
        runner.run_until_caught_up()
        assert store.sql("SELECT count(*) FROM projection_errors").fetchall() == [(3,)]


def test_apply_sql_retry_waits_with_backoff_then_succeeds() -> None:
    with ev.open_store() as store:
        _noted(store, ["1", "2"])
        con = store.connect()
        con.execute("CREATE TABLE gate (open BOOLEAN)")
        con.execute("INSERT INTO gate VALUES (false)")
        flaky = SqlProjection(
            "flaky",
            setup_sql="CREATE TABLE flaky (position BIGINT)",
            # While the gate is shut the cast fails: a data error, as a retry would meet one.
            apply_sql="INSERT INTO flaky SELECT position FROM new_events "
            "WHERE CAST(CASE WHEN (SELECT open FROM main.gate) THEN '1' ELSE 'shut' END AS INTEGER) = 1",
            on_error=Retry(max_attempts=4, initial_delay=0.5, multiplier=3.0),
        )
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:
                con.execute("UPDATE gate SET open = true")

        runner = ProjectionRunner(store, [flaky], sleep=sleep)
        runner.run_until_caught_up()
        assert waits == [0.5, 1.5]
        assert store.sql("SELECT count(*) FROM flaky").fetchall() == [(2,)]
        runner.close()
        con.close()


def test_errors_in_the_sql_itself_stop_even_when_skipping() -> None:
    with ev.open_store() as store:
        _noted(store, ["1"])
        typo = SqlProjection(
            "typo", setup_sql="CREATE TABLE typo (x INT)", apply_sql="INSERT INTO typo SELECT nope FROM new_events",
            on_error="skip",
        )
        with pytest.raises(ev.ProjectionError, match=r"'typo'.*nope"):
            ProjectionRunner(store, [typo]).run_until_caught_up()
        assert store.sql("SELECT count(*) FROM projection_errors WHERE policy = 'skip'").fetchall() == [(0,)]


def test_a_table_named_like_a_view_or_event_type_is_refused() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=1)
        store.create_view("summary", "SELECT count(*) AS n FROM events")
        for name, table_sql in (("p1", "CREATE TABLE summary (x INT)"), ("p2", "CREATE TABLE events (x INT)")):
            p = SqlProjection(name, setup_sql=table_sql, apply_sql="SELECT 1")
            with pytest.raises(ProjectionNameError, match="taken"):
                ProjectionRunner(store, [p]).run_until_caught_up()
        assert store.sql("SELECT count(*) FROM duckdb_schemas() WHERE schema_name LIKE 'p_\\_\\_v%' ESCAPE '\\'"
                         ).fetchall() == [(0,)]
        assert store.sql("SELECT n FROM summary").fetchall() == [(3,)]


def test_two_projections_of_one_name_are_refused() -> None:
    with ev.open_store() as store:
        with pytest.raises(ProjectionNameError, match="two projections"):
            ProjectionRunner(store, [balances(), balances()])
        ProjectionRunner(store, [Totals()]).run_until_caught_up()
        clash = SqlProjection("totals", setup_sql="CREATE TABLE t (x INT)", apply_sql="SELECT 1")
        with pytest.raises(ProjectionNameError, match="python projection"):
            ProjectionRunner(store, [clash]).run_until_caught_up()


def test_definitions_are_stored_so_the_store_rebuilds_without_code(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with ev.open_store(path) as store:
        fill(store)
        with ProjectionRunner(store, [balances(), Totals()]) as runner:
            runner.run_until_caught_up()
    with ev.open_store(path) as store:
        listed = list_projections(store).set_index("name")
        assert listed.loc["balances", "kind"] == "sql" and listed.loc["balances", "version"] == 1
        assert listed.loc["balances", "tables"] == "balances"
        assert listed.loc["totals", "kind"] == "python"
        assert rebuild_projection(store, "balances", progress=False) == store.last_position
        assert table(store) == fold(store)
        assert list_projections(store).set_index("name").loc["balances", "version"] == 2
        with pytest.raises(ev.InvalidInputError, match="Python projection"):
            rebuild_projection(store, "totals")
        with pytest.raises(ev.InvalidInputError, match="no SqlProjection"):
            rebuild_projection(store, "nothing")


def test_a_changed_definition_is_rebuilt_beside_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with ev.open_store(path) as store:
        fill(store)
        with ProjectionRunner(store, [balances()]) as runner:
            runner.run_until_caught_up()
    changed = SqlProjection(
        "balances",
        setup_sql="CREATE TABLE balances (account_id VARCHAR PRIMARY KEY, balance DECIMAL(38, 12), events BIGINT)",
        apply_sql=BALANCES_APPLY.replace("sum(amount)", "sum(amount) * 2"),
    )
    with ev.open_store(path) as store, ProjectionRunner(store, [changed]) as runner:
        runner.run_until_caught_up()
        doubled = {a: (2 * b, n) for a, (b, n) in fold(store).items()}
        assert table(store) == doubled
        assert runner.status().set_index("name").loc["balances", "version"] == 2
        schemas = store.sql("SELECT schema_name FROM duckdb_schemas() WHERE schema_name LIKE 'balances%'")
        assert schemas.fetchall() == [("balances__v2",)]


def test_a_reader_never_sees_a_half_built_table_during_rebuilds() -> None:
    with ev.open_store(durability="none") as store:
        for a in range(40):
            store.append(f"acc-{a}", [deposited("1.25", f"acc-{a}") for _ in range(1_000)])
        runner = ProjectionRunner(store, [balances()], batch_size=5_000)
        runner.run_until_caught_up()
        expected = store.sql("SELECT count(*), sum(balance), sum(events) FROM balances").fetchall()[0]
        assert expected[0] == 40 and expected[2] == 40_000
        seen: list[tuple[Any, ...]] = []
        done = threading.Event()
        failures: list[BaseException] = []

        def read() -> None:
            con = store.connect()
            try:
                while not done.is_set():
                    seen.append(con.execute("SELECT count(*), sum(balance), sum(events) FROM balances").fetchall()[0])
            except BaseException as exc:  # reported below
                failures.append(exc)
            finally:
                con.close()

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(3):
                runner.rebuild("balances", progress=False)
        finally:
            done.set()
            reader.join()
        assert not failures
        assert seen and all(row == expected for row in seen), {row for row in seen if row != expected}
        assert runner.status().set_index("name").loc["balances", "version"] == 4
        runner.close()


# -- Python projections -------------------------------------------------------------------------


def test_python_projection_gets_only_its_event_types(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    fill(store)
    totals = Totals()
    ProjectionRunner(store, [totals]).run_until_caught_up()
    assert totals.read_model == deposits_by_account(store)
    assert set(totals.seen) == {"test.Deposited"} and len(totals.seen) == 12
    assert totals._checkpoint == store.last_position


class AsyncCounter(Projection[dict[str, int]]):
    projection_id = "async-counter"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.resets = 0

    @property
    def read_model(self) -> dict[str, int]:
        return self.counts

    async def handle(self, event: ev.Event) -> bool:
        await asyncio.sleep(0)  # a real await: another task may run here
        self.counts[event.event_type] = self.counts.get(event.event_type, 0) + 1
        return True

    async def reset(self) -> None:
        self.resets += 1
        self.counts = {}


def test_async_projections_run_from_sync_code_and_from_a_running_loop() -> None:
    with ev.open_store() as store:
        fill(store, accounts=2, rounds=1)
        counter = AsyncCounter()
        runner = ProjectionRunner(store, [counter])
        runner.run_until_caught_up()
        assert counter.counts == {"test.Opened": 2, "test.Deposited": 2, "test.Withdrawn": 2}

        async def in_a_notebook_cell() -> None:
            store.append("acc-0", [deposited("1", "acc-0")])
            runner.run_until_caught_up()  # a loop is running here: the runner uses a thread of its own

        asyncio.run(in_a_notebook_cell())
        assert counter.counts["test.Deposited"] == 3


class Exploding(Totals):
    projection_id = "exploding"

    def __init__(self, bad_amount: Decimal, failures: int = 10**9) -> None:
        super().__init__()
        self.bad_amount, self.failures = bad_amount, failures

    def handle(self, event: ev.Event) -> bool:
        assert isinstance(event, Deposited)
        if event.amount == self.bad_amount and self.failures > 0:
            self.failures -= 1
            raise ValueError(f"cannot take {event.amount}")
        return super().handle(event)


def test_handler_error_stop_keeps_the_checkpoint_before_the_event() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=3)  # positions: 1 opened, 2/3 dep 10/wd, 4/5 dep 11/wd, 6/7 dep 12/wd
        exploding = Exploding(Decimal("11"))
        runner = ProjectionRunner(store, [exploding])
        with pytest.raises(ev.ProjectionError, match=r"'exploding'.*position 4.*ValueError: cannot take 11") as info:
            runner.run_until_caught_up()
        assert info.value.projection == "exploding"
        assert exploding.totals == {"acc-0": Decimal("10")}
        assert checkpoint_row(store, "exploding") == 3
        row = runner.status().set_index("name").loc["exploding"]
        assert (row["state"], row["checkpoint"], row["errors"]) == ("failed", 3, 1)
        assert store.sql("SELECT position, policy FROM projection_errors").fetchall() == [(4, "stop")]


def test_handler_error_skip_records_the_event_and_goes_on() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=3)
        exploding = Exploding(Decimal("11"))
        exploding.on_error = "skip"
        runner = ProjectionRunner(store, [exploding])
        runner.run_until_caught_up()
        assert exploding.totals == {"acc-0": Decimal("22")}
        assert checkpoint_row(store, "exploding") == store.last_position
        errors = store.sql("SELECT projection, position, stream_id, event_type, error, policy FROM projection_errors")
        assert errors.fetchall() == [
            ("exploding", 4, "acc-0", "test.Deposited", "ValueError: cannot take 11", "skip")
        ]
        assert runner.status().set_index("name").loc["exploding", "errors"] == 1


def test_handler_error_retry_backs_off_with_the_injected_sleep() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=3)
        exploding = Exploding(Decimal("11"), failures=2)
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        runner = ProjectionRunner(store, [exploding], on_error={"exploding": "retry"}, sleep=sleep)
        runner.run_until_caught_up()
        assert waits == [0.1, 0.2]
        assert exploding.totals == {"acc-0": Decimal("33")}
        assert store.sql("SELECT count(*) FROM projection_errors").fetchall() == [(0,)]


def test_retry_then_skip_after_the_last_attempt() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=3)
        exploding = Exploding(Decimal("11"))
        runner = ProjectionRunner(
            store, [exploding], on_error={"exploding": Retry(max_attempts=3, then="skip")}, sleep=lambda s: None
        )
        runner.run_until_caught_up()
        assert exploding.totals == {"acc-0": Decimal("22")}
        assert store.sql("SELECT attempts, policy FROM projection_errors").fetchall() == [(3, "retry x3 then skip")]


class SavedTotals(Totals):
    """Persists its read model and checkpoint together, in one file."""

    projection_id = "saved-totals"
    persistent = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        if path.exists():
            saved = json.loads(path.read_text())
            self.totals = {k: Decimal(v) for k, v in saved["totals"].items()}
            self._checkpoint = saved["checkpoint"]

    def get_checkpoint(self) -> int:
        return self._checkpoint

    def update_checkpoint(self, position: int) -> None:
        self._checkpoint = position
        body = {"checkpoint": position, "totals": {k: str(v) for k, v in self.totals.items()}}
        self.path.write_text(json.dumps(body))


def test_a_persistent_projection_resumes_and_a_memory_one_replays(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with ev.open_store(path) as store:
        fill(store, accounts=2, rounds=2)
        ProjectionRunner(store, [SavedTotals(tmp_path / "saved.json"), Totals()]).run_until_caught_up()
        first = store.last_position
    with ev.open_store(path) as store:
        store.append("acc-0", [deposited("100", "acc-0")])
        saved, memory = SavedTotals(tmp_path / "saved.json"), Totals()
        ProjectionRunner(store, [saved, memory]).run_until_caught_up()
        assert saved.seen == ["test.Deposited"]  # only the event after its checkpoint
        assert len(memory.seen) == 5  # everything again: its read model was in memory
        assert saved.read_model == memory.read_model == deposits_by_account(store)
        assert saved.get_checkpoint() == first + 1


def test_python_rebuild_resets_and_replays() -> None:
    with ev.open_store() as store:
        fill(store, accounts=2, rounds=2)
        totals = Totals()
        runner = ProjectionRunner(store, [totals])
        runner.run_until_caught_up()
        totals.totals["acc-0"] = Decimal("-1")  # damage it
        runner.rebuild("totals")
        assert totals.read_model == deposits_by_account(store)
        with pytest.raises(ev.InvalidInputError, match="no projection named"):
            runner.rebuild("nothing")


# -- the runner ---------------------------------------------------------------------------------


def test_lag_in_events_and_seconds_follows_the_store_clock() -> None:
    clock = ev.ManualClock()
    with ev.open_store(clock=clock) as store:
        fill(store, accounts=1, rounds=1)
        runner = ProjectionRunner(store, [balances(), Totals()])
        runner.run_until_caught_up()
        assert runner.lag["balances"] == runner.lag["totals"] == Lag(0, 0.0)
        store.append("acc-0", [deposited("1", "acc-0"), deposited("2", "acc-0")])
        clock.advance(seconds=90)
        assert runner.lag["balances"] == Lag(events=2, seconds=90.0)
        status = runner.status().set_index("name")
        assert list(status["lag"]) == [2, 2] and list(status["lag_seconds"]) == [90.0, 90.0]
        html_text = runner._repr_html_()
        assert "balances" in html_text and "2 events (1 min 30 s)" in html_text
        assert "checkpoint" in balances()._repr_html_() or "SqlProjection" in balances()._repr_html_()
        runner.close()


def test_a_caught_up_projection_with_new_events_is_behind_and_its_lag_reads_in_human_units() -> None:
    clock = ev.ManualClock()
    with ev.open_store(clock=clock) as store:
        fill(store, accounts=1, rounds=1)
        runner = ProjectionRunner(store, [balances(), Totals()])
        runner.run_until_caught_up()
        store.append("acc-0", [deposited("1", "acc-0")])
        clock.advance(seconds=93_540)
        status = runner.status().set_index("name")
        assert list(status["state"]) == ["behind", "behind"]
        html_text = runner._repr_html_()
        assert "caught up" not in html_text
        assert "1 events (1 d 2 h)" in html_text and "behind" in html_text
        runner.run_until_caught_up()
        assert list(runner.status()["state"]) == ["caught up", "caught up"]
        runner.close()


@pytest.mark.parametrize(("seconds", "said"), [
    (0.42, "0.4 s"), (42.4, "42 s"), (200, "3 min 20 s"), (7_500, "2 h 5 min"), (93_540, "1 d 2 h"),
])
def test_durations_read_in_human_units(seconds: float, said: str) -> None:
    assert human_duration(seconds) == said


def test_status_is_a_dataframe_of_every_projection() -> None:
    with ev.open_store() as store:
        fill(store, accounts=1, rounds=1)
        runner = ProjectionRunner(store, [balances(), Totals()])
        assert list(runner.status().columns) == [
            "name", "kind", "checkpoint", "lag", "lag_seconds", "state", "errors", "last_error", "version"
        ]
        assert list(runner.status()["state"]) == ["new", "new"]
        runner.run_until_caught_up()
        status = runner.status().set_index("name")
        assert list(status["state"]) == ["caught up", "caught up"]
        assert list(status["kind"]) == ["sql", "python"]
        projection = runner.projections["balances"]
        assert isinstance(projection, SqlProjection)
        assert "v1" in repr(projection) and "<table>" in projection._repr_html_()
        runner.close()


def test_run_follows_appends_live_and_stops() -> None:
    async def scenario(store: ev.EventStore) -> None:
        totals = Totals()
        runner = ProjectionRunner(store, [balances(), totals])
        task = asyncio.create_task(runner.run())
        assert await runner.wait_for_position_async(store.last_position, timeout=30)
        for i in range(5):
            store.append("acc-9", [deposited(str(i + 1), "acc-9")])
            assert await runner.wait_for_position_async(store.last_position, timeout=30)
            assert table(store)["acc-9"] == (Decimal(sum(range(1, i + 2))), i + 1)
            assert totals.read_model["acc-9"] == Decimal(sum(range(1, i + 2)))
        assert set(runner.status()["state"]) == {"live"}
        await runner.rebuild_async("balances")
        assert table(store) == fold(store)
        await runner.stop()
        await task
        assert set(runner.status()["state"]) == {"stopped"}
        runner.close()

    with ev.open_store(flush_every=4) as store:
        fill(store, accounts=2, rounds=2)
        asyncio.run(scenario(store))


def test_sync_rebuild_from_another_thread_while_running_live() -> None:
    with ev.open_store() as store:
        fill(store, accounts=2, rounds=2)
        runner = ProjectionRunner(store, [balances()])
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            async def main() -> None:
                task = asyncio.create_task(runner.run())
                started.set()
                await task

            loop.run_until_complete(main())

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            assert started.wait(30)
            assert runner.wait_for_position(store.last_position, timeout=30)
            runner.rebuild("balances")
            assert table(store) == fold(store)
            store.append("acc-0", [deposited("7", "acc-0")])
            assert runner.wait_for_position(store.last_position, timeout=30)
            assert table(store) == fold(store)
        finally:
            asyncio.run_coroutine_threadsafe(runner.stop(), loop).result()
            thread.join()
            loop.close()
        runner.close()


def test_a_failed_live_projection_does_not_stop_the_others() -> None:
    class Watching(Totals):
        def __init__(self) -> None:
            super().__init__()
            self.got_one = asyncio.Event()

        def handle(self, event: ev.Event) -> bool:
            if isinstance(event, Deposited) and event.amount == 1:
                self.got_one.set()
            return super().handle(event)

    async def scenario(store: ev.EventStore) -> None:
        exploding, watching = Exploding(Decimal("99")), Watching()
        runner = ProjectionRunner(store, [exploding, watching])
        task = asyncio.create_task(runner.run())
        store.append("acc-0", [deposited("99", "acc-0"), deposited("1", "acc-0")])
        assert not await runner.wait_for_position_async(store.last_position, timeout=30)
        await asyncio.wait_for(watching.got_one.wait(), timeout=30)
        assert watching.read_model["acc-0"] == Decimal("100")
        status = runner.status().set_index("name")
        assert status.loc["exploding", "state"] == "failed"
        assert "cannot take 99" in status.loc["exploding", "last_error"]
        await runner.stop()
        await task

    with ev.open_store() as store:
        asyncio.run(scenario(store))


def test_bad_runner_arguments() -> None:
    with ev.open_store() as store:
        with pytest.raises(ev.InvalidInputError, match="batch_size"):
            ProjectionRunner(store, [Totals()], batch_size=0)
        with pytest.raises(ev.InvalidInputError, match="on_error"):
            ProjectionRunner(store, [Totals()], on_error={"totals": "ignore"})  # type: ignore[dict-item]
        with pytest.raises(ev.InvalidInputError, match="does not have"):
            ProjectionRunner(store, [Totals()], on_error={"other": "skip"})
        with pytest.raises(ev.InvalidInputError, match="takes SqlProjection"):
            ProjectionRunner(store, ["totals"])  # type: ignore[list-item]


def test_retry_delays_double_up_to_the_maximum() -> None:
    policy = Retry(max_attempts=6, initial_delay=0.5, max_delay=3.0)
    assert [policy.delay(i) for i in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ev.InvalidInputError):
        Retry(max_attempts=0)


def test_retry_and_the_queue_retry_policy_speak_the_same_words() -> None:
    projection = Retry(max_attempts=6, initial_delay=0.5, max_delay=3.0, multiplier=3.0)
    queue = ev.RetryPolicy(max_attempts=6, initial_delay=0.5, max_delay=3.0, multiplier=3.0, jitter=False)
    assert [projection.delay(n) for n in range(1, 5)] == [queue.delay(n) for n in range(1, 5)] == [0.5, 1.5, 3.0, 3.0]
    assert projection.max_attempts == queue.max_attempts == 6
    # The former names still work, and say what they are called now.
    with pytest.warns(DeprecationWarning, match="max_attempts"):
        old = Retry(attempts=6, initial_delay=0.5, max_delay=3.0, multiplier=3.0)
    assert old == projection
    with pytest.warns(DeprecationWarning, match="max_attempts"):
        assert old.attempts == 6
    with pytest.warns(DeprecationWarning, match=r"delay\(\)"):
        assert queue.backoff(2) == 1.5
    # One rule for both: the first delay may not exceed the cap, attempts start at 1.
    for make in (Retry, ev.RetryPolicy):
        with pytest.raises(ev.InvalidInputError, match="initial_delay <= max_delay"):
            make(initial_delay=5.0, max_delay=1.0)
        with pytest.raises(ev.InvalidInputError, match="max_attempts must be an int >= 1"):
            make(max_attempts=0)




# -- the command line hooks -----------------------------------------------------------------------


def test_projection_commands_list_status_and_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from eventador.cli.projections import add_parser

    parser = argparse.ArgumentParser(prog="eventador")
    add_parser(parser.add_subparsers(dest="command", required=True))
    path = tmp_path / "store"
    with ev.open_store(path) as store:
        fill(store)
        with ProjectionRunner(store, [balances(), Totals()]) as runner:
            runner.run_until_caught_up()

    def run(*argv: str) -> str:
        args = parser.parse_args(["projection", *argv])
        assert args.run(args) == 0
        return capsys.readouterr().out

    listed = run("list", str(path))
    assert "balances" in listed and "totals" in listed and "python" in listed
    assert json.loads(run("list", str(path), "--format", "json"))[0]["name"] == "balances"
    assert "acc-" not in run("status", str(path), "balances")
    assert "rebuilt balances: version 2, checkpoint 27" in run("rebuild", str(path), "balances", "--no-progress")
    with pytest.raises(ev.InvalidInputError, match="no projection named"):
        run("status", str(path), "nothing")
    with pytest.raises(ev.InvalidInputError, match="no eventador store"):
        run("list", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit):
        parser.parse_args(["projection", "rebuild", str(path)])  # NAME is required
    capsys.readouterr()
    for action in ("list", "status", "rebuild"):
        with pytest.raises(SystemExit):
            parser.parse_args(["projection", action, "--help"])
        assert "usage:" in capsys.readouterr().out
