"""Invariants of projections: a SQL projection equals a Python fold, whatever the batches;
a subscription sees every position once, in order, while others append."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador import Projection, ProjectionRunner, SqlProjection
from tests.support.domain import (
    Deposited,
    Opened,
    Withdrawn,
    account_events,
    deposited,
    ledger_projection_sql,
    opened,
    withdrawn,
)

ACCOUNTS = ("acc-a", "acc-b", "acc-c", "acc-d")

# Per account: balance, deposits, withdrawals, opened; and the last note seen (order matters).
SETUP, APPLY = ledger_projection_sql("last_position", "position", "BIGINT")

Row = tuple[Decimal, int, int, int, int]


def ledger_projection() -> SqlProjection:
    return SqlProjection("ledger", setup_sql=SETUP, apply_sql=APPLY)


def python_fold(store: ev.EventStore) -> dict[str, Row]:
    out: dict[str, Row] = {}
    for r in store.read_all():
        e = r.event
        balance, d, w, o, _ = out.get(e.account_id, (Decimal(0), 0, 0, 0, 0))  # type: ignore[attr-defined]
        if isinstance(e, Deposited):
            balance, d = balance + e.amount, d + 1
        elif isinstance(e, Withdrawn):
            balance, w = balance - e.amount, w + 1
        elif isinstance(e, Opened):
            o += 1
        out[e.account_id] = (balance, d, w, o, r.position)  # type: ignore[attr-defined]
    return out


def ledger(store: ev.EventStore) -> dict[str, Row]:
    rows = store.sql("SELECT * FROM ledger").fetchall()
    return {a: (Decimal(b), int(d), int(w), int(o), int(p)) for a, b, d, w, o, p in rows}



# One append: a few events of one account's stream.
an_append = st.sampled_from(ACCOUNTS).flatmap(
    lambda a: st.tuples(st.just(a), st.lists(account_events(a, max_amount="100000"), min_size=1, max_size=6))
)


def _append(store: ev.EventStore, account: str, events: list[ev.Event]) -> None:
    store.append(account, events)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appends=st.lists(an_append, min_size=1, max_size=12),
    flush_every=st.integers(min_value=1, max_value=8),
    batch_sizes=st.lists(st.one_of(st.none(), st.integers(min_value=1, max_value=7)), min_size=1, max_size=12),
)
def test_sql_projection_equals_the_python_fold_in_any_batches(
    appends: list[tuple[str, list[ev.Event]]], flush_every: int, batch_sizes: list[int | None]
) -> None:
    with ev.open_store(flush_every=flush_every) as store:
        runners = []
        for i, (account, events) in enumerate(appends):
            _append(store, account, events)
            # Catch up now and then, each time in batches of another size.
            if i % 2 == 0:
                runner = ProjectionRunner(store, [ledger_projection()], batch_size=batch_sizes[i % len(batch_sizes)])
                runner.run_until_caught_up()
                runners.append(runner)
        runner = ProjectionRunner(store, [ledger_projection()], batch_size=batch_sizes[-1])
        runner.run_until_caught_up()
        incremental = ledger(store)
        assert incremental == python_fold(store)
        runner.rebuild("ledger", progress=False)
        assert ledger(store) == incremental
        for r in [*runners, runner]:
            r.close()


class PythonLedger(Projection[dict[str, Row]]):
    projection_id = "python-ledger"

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    @property
    def read_model(self) -> dict[str, Row]:
        return self.rows

    def handle_recorded(self, recorded: ev.RecordedEvent) -> bool:
        e = recorded.event
        balance, d, w, o, _ = self.rows.get(e.account_id, (Decimal(0), 0, 0, 0, 0))  # type: ignore[attr-defined]
        if isinstance(e, Deposited):
            balance, d = balance + e.amount, d + 1
        elif isinstance(e, Withdrawn):
            balance, w = balance - e.amount, w + 1
        else:
            o += 1
        self.rows[e.account_id] = (balance, d, w, o, recorded.position)  # type: ignore[attr-defined]
        return True

    def handle(self, event: ev.Event) -> bool:  # handle_recorded is used instead
        raise AssertionError("not called")

    def reset(self) -> None:
        self.rows = {}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends=st.lists(an_append, min_size=1, max_size=10), batch_size=st.integers(min_value=1, max_value=5))
def test_python_and_sql_projections_agree_through_the_live_runner(
    appends: list[tuple[str, list[ev.Event]]], batch_size: int
) -> None:
    async def scenario(store: ev.EventStore) -> None:
        python = PythonLedger()
        runner = ProjectionRunner(store, [ledger_projection(), python], batch_size=batch_size)
        task = asyncio.create_task(runner.run())
        for account, events in appends:
            _append(store, account, events)
        assert await runner.wait_for_position_async(store.last_position, timeout=60)
        assert ledger(store) == python.read_model == python_fold(store)
        await runner.stop()
        await task
        runner.close()

    with ev.open_store(flush_every=5) as store:
        asyncio.run(scenario(store))


def test_a_subscription_sees_every_position_once_in_order_while_others_append() -> None:
    writers, appends_each, per_append = 4, 60, 5
    total = writers * appends_each * per_append

    async def consume(store: ev.EventStore, start: threading.Event) -> list[int]:
        seen: list[int] = []
        start.set()
        async for recorded in store.subscribe(from_position=1, batch_size=7):
            seen.append(recorded.position)
            if len(seen) == total:
                break
        return seen

    with ev.open_store(flush_every=50, durability="none") as store:
        start = threading.Event()

        def write(w: int) -> None:
            start.wait()
            for i in range(appends_each):
                store.append(f"w{w}", [deposited(str(i + 1), f"w{w}") for _ in range(per_append)])

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        try:
            seen = asyncio.run(consume(store, start))
        finally:
            for t in threads:
                t.join()
        assert seen == list(range(1, total + 1))
        # Each stream's events arrive in version order too.
        versions: dict[str, list[int]] = {}
        for r in store.read_all():
            versions.setdefault(r.stream_id, []).append(r.version)
        assert all(v == list(range(1, len(v) + 1)) for v in versions.values())


def test_a_subscription_filtered_by_type_sees_exactly_those_events_live() -> None:
    async def scenario(store: ev.EventStore) -> list[int]:
        got: list[int] = []
        async for recorded in store.subscribe(event_types=[Withdrawn]):
            got.append(recorded.position)
            if len(got) == 3:
                return got
            await asyncio.to_thread(store.append, "acc-a", [deposited("1", "acc-a"), withdrawn("1", "acc-a")])
        return got

    with ev.open_store() as store:
        store.append("acc-a", [opened("acc-a"), withdrawn("1", "acc-a")])
        assert asyncio.run(scenario(store)) == [2, 4, 6]
