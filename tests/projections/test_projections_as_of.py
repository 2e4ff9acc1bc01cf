"""A read model as of a past point: ``SqlProjection.as_of(store, when, by=...)``.

The oracle: a fresh SqlProjection, run by a ProjectionRunner over a fresh store that
holds only the events at or before the point (picked from ``read_all`` by their
position and times, not by ``as_of``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador import ManualClock, Projection, ProjectionNameError, ProjectionRunner, SqlProjection, list_projections
from eventador.projections import PastReadModel
from eventador.testing import DirectoryStoreFactory, StoreFactory
from tests.support.domain import Deposited, account_events, deposited, ledger_projection_sql, opened, withdrawn

START = datetime(2026, 3, 1, 9, tzinfo=UTC)
ACCOUNTS = ("acc-a", "acc-b", "acc-c")

# Per account: balance, counts per type, and the newest occurred_at (an order-aware column
# that does not depend on positions, which differ in the oracle's store).
SETUP, APPLY = ledger_projection_sql("last_occurred", "occurred_at", "TIMESTAMPTZ")

Rows = dict[str, tuple[Any, ...]]


class NeverHappened(ev.Event, event_type="asof.NeverHappened"):
    note: str


def ledger_projection() -> SqlProjection:
    return SqlProjection("ledger", setup_sql=SETUP, apply_sql=APPLY)


def rows(relation: Any) -> Rows:
    return {r[0]: (Decimal(r[1]), *r[2:]) for r in relation.fetchall()}


def live_ledger(store: ev.EventStore) -> Rows:
    return rows(store.sql("SELECT * FROM ledger"))


def oracle(kept: list[ev.RecordedEvent]) -> Rows:
    """The ledger of a fresh store holding just `kept`, built by a fresh projection and runner."""
    with ev.open_store() as fresh:
        for r in kept:
            fresh.append(r.stream_id, r.event, occurred_at=r.occurred_at)
        with ProjectionRunner(fresh, [ledger_projection()]) as runner:
            runner.run_until_caught_up()
        return live_ledger(fresh)


def checkpoint(store: ev.EventStore, name: str = "ledger") -> int | None:
    """The projection's checkpoint row in the store's database (None: no row, or no table yet)."""
    con = store.connect()
    try:
        if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'projection_checkpoints'").fetchall():
            return None
        found = con.execute("SELECT position FROM projection_checkpoints WHERE name = ?", [name]).fetchall()
    finally:
        con.close()
    return int(found[0][0]) if found else None


def schemas(store: ev.EventStore) -> list[str]:
    return sorted(str(s) for (s,) in store.sql("SELECT schema_name FROM duckdb_schemas()").fetchall())


def fill(store: ev.EventStore, rounds: int = 4, *, occurred: datetime | None = None) -> None:
    """Opens each account, then `rounds` rounds of a deposit and a withdrawal per account."""
    for a in ACCOUNTS:
        store.append(a, [opened(a)], occurred_at=occurred)
    for r in range(rounds):
        for i, a in enumerate(ACCOUNTS):
            store.append(a, [deposited(str(10 + r + i), a), withdrawn("1.50", a)], occurred_at=occurred)


# -- the property ------------------------------------------------------------------------------


# One append: a few events of one account, and when they occurred (minutes from START; None:
# when recorded). Occurred times are out of order on purpose.
an_append = st.tuples(
    st.sampled_from(ACCOUNTS).flatmap(
        lambda a: st.tuples(st.just(a), st.lists(account_events(a), min_size=1, max_size=4))
    ),
    st.one_of(st.none(), st.integers(min_value=-30, max_value=90)),
)

# A point: a position, or minutes from START (by recorded_at or occurred_at).
a_point = st.one_of(
    st.tuples(st.just("position"), st.integers(min_value=0, max_value=60)),
    st.tuples(st.sampled_from(["recorded_at", "occurred_at"]), st.integers(min_value=-40, max_value=100)),
)


@contextmanager
def some_store(on_disk: bool, flush_every: int, clock: ManualClock) -> Iterator[ev.EventStore]:
    if not on_disk:
        with ev.open_store(clock=clock, flush_every=flush_every) as store:
            yield store
        return
    with tempfile.TemporaryDirectory() as tmp, ev.open_store(
        Path(tmp) / "store", clock=clock, flush_every=flush_every, durability="none"
    ) as store:
        yield store


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appends=st.lists(an_append, min_size=0, max_size=12),
    point=a_point,
    flush_every=st.integers(min_value=1, max_value=6),
    on_disk=st.booleans(),
    run_live_first=st.booleans(),
)
def test_as_of_equals_a_fresh_projection_over_only_the_events_up_to_the_point(
    appends: list[tuple[tuple[str, list[ev.Event]], int | None]],
    point: tuple[str, int],
    flush_every: int,
    on_disk: bool,
    run_live_first: bool,
) -> None:
    clock = ManualClock(START, tick=timedelta(minutes=1))
    with some_store(on_disk, flush_every, clock) as store:
        for (account, events), minutes in appends:
            occurred = None if minutes is None else START + timedelta(minutes=minutes)
            store.append(account, events, occurred_at=occurred)
        runner = None
        if run_live_first:
            runner = ProjectionRunner(store, [ledger_projection()])
            runner.run_until_caught_up()
        before = (live_ledger(store), checkpoint(store)) if runner else None

        by, n = point
        records = list(store.read_all())
        when: int | datetime
        if by == "position":
            when = n
            kept = [r for r in records if r.position <= n]
            past = ledger_projection().as_of(store, when)
        else:
            when = START + timedelta(minutes=n, seconds=30)
            kept = [r for r in records if (r.recorded_at if by == "recorded_at" else r.occurred_at) <= when]
            past = ledger_projection().as_of(store, when, by=by)  # type: ignore[arg-type]
        with past:
            assert rows(past.sql("SELECT * FROM ledger")) == oracle(kept)
            assert past.sql("SELECT count(*) FROM events").fetchall() == [(len(kept),)]
        if runner is not None:
            assert (live_ledger(store), checkpoint(store)) == before
            runner.close()


# -- the point ------------------------------------------------------------------------------


def _dated_store() -> tuple[ev.EventStore, list[ev.RecordedEvent]]:
    store = ev.open_store(clock=ManualClock(START, tick=timedelta(minutes=1)))
    fill(store)
    return store, list(store.read_all())


def test_as_of_a_position_and_an_aware_datetime_agree() -> None:
    store, records = _dated_store()
    with store:
        eleventh = records[10]  # the last of its append (events appended together share a time)
        by_position = ledger_projection().as_of(store, 11)
        by_time = ledger_projection().as_of(store, eleventh.recorded_at + timedelta(seconds=1))
        assert (by_position.position, by_time.position) == (11, 11)
        assert rows(by_position.table()) == rows(by_time.table()) == oracle(records[:11])
        # The same moment in another time zone.
        elsewhere = eleventh.recorded_at.astimezone(timezone(timedelta(hours=-5)))
        assert rows(ledger_projection().as_of(store, elsewhere).table()) == oracle(records[:11])
        # A point past the end: everything, like the live model.
        assert rows(ledger_projection().as_of(store, 10**6).table()) == oracle(records)


def test_as_of_by_occurred_at_keeps_the_events_that_occurred_by_then() -> None:
    clock = ManualClock(START, tick=timedelta(minutes=1))
    with ev.open_store(clock=clock) as store:
        fill(store, rounds=1, occurred=START - timedelta(days=10))  # backfilled: occurred long ago
        store.append("acc-a", deposited("500", "acc-a"))  # occurred when recorded
        cutoff = START - timedelta(days=1)
        past = ledger_projection().as_of(store, cutoff, by="occurred_at")
        assert past.occurred_before == cutoff
        records = list(store.read_all())
        assert rows(past.table()) == oracle(records[:-1])
        assert past.df().loc[lambda t: t["account_id"] == "acc-a", "deposits"].tolist() == [1]
        # By recorded time, at the same moment, nothing had been recorded yet.
        assert rows(ledger_projection().as_of(store, cutoff).table()) == {}


@pytest.mark.parametrize("by", ["recorded_at", "occurred_at"])
def test_a_point_before_the_first_event_gives_the_empty_tables(by: str) -> None:
    store, _ = _dated_store()
    with store:
        past = ledger_projection().as_of(store, START - timedelta(days=1), by=by)  # type: ignore[arg-type]
        assert past.tables == ("ledger",)
        assert past.df().empty and list(past.df().columns) == [
            "account_id", "balance", "deposits", "withdrawals", "opened", "last_occurred"
        ]
        assert ledger_projection().as_of(store, 0).table().fetchall() == []
    with ev.open_store() as empty:
        assert ledger_projection().as_of(empty, 5).table().fetchall() == []


def test_a_naive_datetime_or_a_bad_point_is_refused() -> None:
    store, _ = _dated_store()
    with store:
        with pytest.raises(ev.InvalidInputError, match="aware datetime"):
            ledger_projection().as_of(store, datetime(2026, 3, 1, 12))
        with pytest.raises(ev.InvalidInputError, match="aware datetime"):
            ledger_projection().as_of(store, datetime(2026, 3, 1, 12), by="occurred_at")
        with pytest.raises(ev.InvalidInputError, match="by must be"):
            ledger_projection().as_of(store, 3, by="written_at")  # type: ignore[arg-type]
        with pytest.raises(ev.InvalidInputError, match="position or an aware datetime"):
            ledger_projection().as_of(store, "yesterday")  # type: ignore[arg-type]


# -- the live read model is left alone ----------------------------------------------------------


def test_the_live_read_model_checkpoint_and_catalog_are_unchanged(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    fill(store)
    with ProjectionRunner(store, [ledger_projection()]) as runner:
        runner.run_until_caught_up()
        live, mark, known = live_ledger(store), checkpoint(store), schemas(store)
        definitions = list_projections(store).to_dict("records")
        past = ledger_projection().as_of(store, 7)
        assert rows(past.table()) == oracle(list(store.read_all(to_position=7)))
        assert rows(past.table()) != live
        assert (live_ledger(store), checkpoint(store), schemas(store)) == (live, mark, known)
        assert list_projections(store).to_dict("records") == definitions
        # The live model still follows new events.
        store.append("acc-a", deposited("5", "acc-a"))
        runner.run_until_caught_up()
        assert live_ledger(store) == oracle(list(store.read_all()))
        assert rows(past.table()) == oracle(list(store.read_all(to_position=7)))


def test_a_projection_no_runner_ran_leaves_no_trace_in_the_store(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store") as store:
        fill(store)
        names = store.sql("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()
        past = ledger_projection().as_of(store, 5)
        assert len(past.table().fetchall()) == 3
        assert checkpoint(store) is None
        assert store.sql("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall() == names
        assert "ledger" not in set(list_projections(store)["name"])


def test_works_on_a_read_only_opener_beside_the_writer(tmp_path: Path) -> None:
    with DirectoryStoreFactory(tmp_path / "store", flush_every=4) as factory:
        writer = factory.open(clock=ManualClock(START, tick=timedelta(minutes=1)))
        fill(writer, rounds=5)
        writer.append("acc-b", deposited("3", "acc-b"))  # several Parquet files, and events in the hot tier
        with ProjectionRunner(writer, [ledger_projection()]) as runner:
            runner.run_until_caught_up()
        assert writer.info()["files"] >= 2 and writer.info()["hot_events"] > 0
        reader = factory.open(read_only=True)
        records = list(reader.read_all())
        for point in (0, 6, 17, reader.last_position):
            with ledger_projection().as_of(reader, point) as past:
                assert rows(past.table()) == oracle(records[:point])
        moment = records[12].recorded_at  # positions 12 and 13 were appended together
        assert rows(ledger_projection().as_of(reader, moment).table()) == oracle(records[:13])


def test_spans_files_and_the_hot_buffer(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    fill(store, rounds=5)  # 33 events; the tiny-flush kinds hold most in files, a few hot
    records = list(store.read_all())
    for point in (1, 2, 3, 16, 31, 32, 33):
        assert rows(ledger_projection().as_of(store, point).table()) == oracle(records[:point])


def test_events_appended_after_as_of_are_not_in_it() -> None:
    with ev.open_store(flush_every=3) as store:
        fill(store, rounds=1)
        past = ledger_projection().as_of(store, 10**6)
        position = past.position
        store.append("acc-a", deposited("7", "acc-a"))
        assert past.sql("SELECT max(position) FROM events").fetchall() == [(position,)]
        assert rows(past.table()) == oracle(list(store.read_all(to_position=position)))


# -- querying it ---------------------------------------------------------------------------------


def test_sql_sees_the_tables_and_the_events_as_of_the_point() -> None:
    store, records = _dated_store()
    with store:
        past = ledger_projection().as_of(store, 12)
        assert isinstance(past, PastReadModel)
        relation = past.sql(
            "SELECT l.account_id, l.deposits, count(e.position) AS events FROM ledger l "
            "JOIN events e ON e.stream_id = l.account_id GROUP BY ALL ORDER BY 1"
        )
        got = relation.df()
        assert list(got["events"]) == [
            sum(1 for r in records[:12] if r.stream_id == a) for a in ACCOUNTS
        ]
        assert relation.arrow().read_all().num_rows == 3  # DuckDB 2: a RecordBatchReader
        assert past.sql('SELECT count(*) FROM "test.Deposited"').fetchall() == [
            (sum(1 for r in records[:12] if r.event_type == "test.Deposited"),)
        ]
        assert past.sql("SELECT count(*) FROM ledger WHERE deposits > ?", [0]).fetchall()[0][0] >= 1
        with pytest.raises(ev.InvalidInputError, match="SQL error"):
            past.sql("SELECT nope FROM ledger")
        # A type with no event yet has its (empty) view here too.
        assert past.sql('SELECT count(*) FROM "asof.NeverHappened"').fetchall() == [(0,)]
        with pytest.raises(ev.InvalidInputError, match="has no table 'other'"):
            past.table("other")
        past.close()
        past.close()
        with pytest.raises(ev.InvalidInputError, match="closed"):
            past.sql("SELECT 1")


def test_several_tables_are_named_and_event_types_narrow_the_events() -> None:
    two = SqlProjection(
        "two",
        setup_sql="CREATE TABLE deposits_seen (n BIGINT); CREATE TABLE all_seen (n BIGINT)",
        apply_sql="INSERT INTO deposits_seen SELECT count(*) FROM new_test_Deposited; "
        "INSERT INTO all_seen SELECT count(*) FROM new_events",
        event_types=["test.Deposited", "test.Opened"],
    )
    store, records = _dated_store()
    with store:
        past = two.as_of(store, 9)
        assert past.tables == ("all_seen", "deposits_seen")
        with pytest.raises(ev.InvalidInputError, match="name the one to read"):
            past.table()
        kinds = [r.event_type for r in records[:9]]
        assert past.table("deposits_seen").fetchall() == [(kinds.count("test.Deposited"),)]
        assert past.df("all_seen")["n"].tolist() == [kinds.count("test.Deposited") + kinds.count("test.Opened")]


def test_repr_and_html() -> None:
    store, _ = _dated_store()
    with store:
        past = ledger_projection().as_of(store, 4)
        assert repr(past) == "PastReadModel('ledger', position <= 4)"
        page = past._repr_html_()
        assert "<b>PastReadModel</b>" in page and "position &lt;= 4" in page
        assert "<code>ledger</code></td><td style='text-align:right'>3</td>" in page
        moment = START + timedelta(days=2)
        later = ledger_projection().as_of(store, moment, by="occurred_at")
        assert repr(later) == f"PastReadModel('ledger', occurred at or before {moment.isoformat()})"
        past.close()
        assert repr(past).endswith(", closed)")


# -- errors ----------------------------------------------------------------------------------------


def test_sql_errors_are_projection_errors_naming_the_projection() -> None:
    store, _ = _dated_store()
    with store:
        bad_setup = SqlProjection("bad", setup_sql="CREATE TABLE bad (x INTEGR)", apply_sql="SELECT 1")
        with pytest.raises(ev.ProjectionError, match=r"'bad'.*setup_sql failed.*INTEGR") as info:
            bad_setup.as_of(store, 5)
        assert info.value.projection == "bad"
        bad_apply = SqlProjection(
            "bad", setup_sql="CREATE TABLE bad (x INTEGER)",
            apply_sql="INSERT INTO bad SELECT CAST(account_id AS INTEGER) FROM new_test_Opened",
        )
        with pytest.raises(ev.ProjectionError, match=r"'bad'.*apply_sql failed on the events at positions 1\.\.5"):
            bad_apply.as_of(store, 5)
        # Before the first event there is nothing for apply_sql to fail on.
        assert bad_apply.as_of(store, 0).table().fetchall() == []
        named_like_a_type = SqlProjection(
            "clash", setup_sql="CREATE TABLE events (x INT)", apply_sql="SELECT 1"
        )
        with pytest.raises(ProjectionNameError):
            named_like_a_type.as_of(store, 5)


# -- Python projections: the replay recipe of eventador/projections/python.py --------------------


class DepositTotals(Projection[dict[str, Decimal]]):
    projection_id = "deposit-totals"
    interested_event_types = (Deposited,)

    def __init__(self) -> None:
        self.totals: dict[str, Decimal] = {}

    @property
    def read_model(self) -> dict[str, Decimal]:
        return self.totals

    def handle(self, event: ev.Event) -> bool:
        assert isinstance(event, Deposited)
        self.totals[event.account_id] = self.totals.get(event.account_id, Decimal(0)) + event.amount
        return True

    def reset(self) -> None:
        self.totals = {}


def test_a_python_projection_as_of_is_a_replay_into_a_fresh_instance() -> None:
    store, records = _dated_store()
    with store:
        live = DepositTotals()
        with ProjectionRunner(store, [live]) as runner:
            runner.run_until_caught_up()
        when = records[10].recorded_at
        totals = DepositTotals()
        for recorded in store.as_of(when).read_all(event_types=DepositTotals.interested_event_types):
            totals.handle_recorded(recorded)
        want: dict[str, Decimal] = {}
        for r in records[:11]:
            if isinstance(r.event, Deposited):
                want[r.event.account_id] = want.get(r.event.account_id, Decimal(0)) + r.event.amount
        assert totals.read_model == want
        assert live.read_model != want and sum(live.read_model.values()) > sum(want.values())
