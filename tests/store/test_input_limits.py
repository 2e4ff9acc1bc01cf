"""What append accepts reads back equal, before and after a flush and a reopen; the rest
is refused before a byte is written, with an EventadorError naming the field and the limit.

The limits: containers nest at most ``MAX_NESTING`` levels in a field, in metadata or in a
queued message; Decimals are finite; text is valid Unicode (no lone surrogates). NumPy and
pandas scalars are stored as their Python values.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador import NestingError
from eventador.codec import MAX_NESTING, decode_value, encode_rows

ROOT = Path(__file__).resolve().parents[2]


class Anything(ev.Event, event_type="test.limits.Anything"):
    value: Any


class Listed(ev.Event, event_type="test.limits.Listed"):
    items: list[Any]
    by_key: dict[str, Any]


class Typed(ev.Event, event_type="test.limits.Typed"):
    count: int
    small: int
    ratio: float
    flag: bool
    name: str
    at: datetime
    amount: Decimal
    span: timedelta | None = None


def nested(depth: int, leaf: Any = 1) -> Any:
    """`leaf` inside `depth` containers, alternating lists and dicts (depth 0: the leaf)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(path: Path) -> Iterator[ev.EventStore]:
    with ev.open_store(path) as s:
        yield s


def read_back_everywhere(path: Path, store: ev.EventStore, stream_id: str) -> list[list[ev.RecordedEvent]]:
    """The stream as read from the hot tier, after a flush, and from a reopened store; and
    every other read path touched once (read_all, SQL with its JSON `data`, Arrow)."""
    seen = [store.read_stream(stream_id)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an int too big for its SQL column: NULL in SQL only
        store.flush()
    seen.append(store.read_stream(stream_id))
    store.close()
    with ev.open_store(path, read_only=True) as again:
        seen.append(again.read_stream(stream_id))
        assert len(list(again.read_all())) == again.last_position
        assert again.sql(
            "SELECT bool_and(json_valid(data)), bool_and(metadata IS NULL OR json_valid(metadata)), "
            "max(length(json_keys(data))) >= 0 FROM events"
        ).fetchall() == [(True, True, True)]
        assert again.sql("SELECT * FROM events").to_arrow_table().num_rows == again.last_position
    return seen


def assert_all_equal(seen: list[list[ev.RecordedEvent]]) -> None:
    first = seen[0]
    for other in seen[1:]:
        assert [(r.event, r.metadata, r.event_type) for r in other] == [
            (r.event, r.metadata, r.event_type) for r in first
        ]


# -- nesting ---------------------------------------------------------------------------------------


def test_values_nested_to_the_limit_read_back_equal_everywhere(path: Path, store: ev.EventStore) -> None:
    deepest = nested(MAX_NESTING)
    events: list[ev.Event] = [
        Anything(value=deepest),
        Listed(items=[nested(MAX_NESTING - 1)], by_key={"x": nested(MAX_NESTING - 1)}),
        ev.UnknownEvent(event_type="test.limits.Unregistered", data={"v": nested(MAX_NESTING - 1)}),
    ]
    store.append("deep", events, metadata={"trace": nested(MAX_NESTING - 1)})
    seen = read_back_everywhere(path, store, "deep")
    assert_all_equal(seen)
    assert seen[-1][0].event == Anything(value=deepest)
    assert seen[-1][0].metadata == {"trace": nested(MAX_NESTING - 1)}


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 450, 900])
@pytest.mark.parametrize("where", ["field", "list field", "metadata", "unknown event"])
def test_one_level_past_the_limit_is_refused_naming_the_field_and_the_limit(
    path: Path, store: ev.EventStore, depth: int, where: str
) -> None:
    store.append("s", Anything(value=1))
    too_deep = nested(depth)
    event: ev.Event = Anything(value=1)
    metadata = None
    if where == "field":
        event, named = Anything(value=too_deep), "Anything.value"
    elif where == "list field":
        event, named = Listed(items=[1, too_deep], by_key={}), "Listed.items[1]"
    elif where == "metadata":
        metadata, named = {"trace": too_deep}, "metadata.trace"
    else:
        event, named = ev.UnknownEvent(event_type="x", data={"v": too_deep}), "UnknownEvent[x].data.v"
    with pytest.raises(NestingError) as caught:
        store.append("s", event, metadata=metadata)
    assert caught.value.path.startswith(named)
    assert caught.value.limit == MAX_NESTING and f"more than {MAX_NESTING} levels" in str(caught.value)
    assert isinstance(caught.value, ev.SerializationError) and isinstance(caught.value, ev.EventadorError)
    # Nothing written: the store flushes, closes and reopens with the one good event.
    assert store.stream_version("s") == 1
    seen = read_back_everywhere(path, store, "s")
    assert [len(s) for s in seen] == [1, 1, 1]


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_a_container_that_holds_itself_is_refused(store: ev.EventStore, kind: str) -> None:
    loop: Any = {}
    if kind == "dict":
        loop["self"] = loop
    else:
        loop = [1]
        loop.append(loop)
    with pytest.raises(NestingError, match="holds itself"):
        store.append("s", Anything(value=loop))
    with pytest.raises(NestingError):
        store.append("s", Anything(value=1), metadata={"loop": loop})
    assert store.stream_version("s") == 0


CHILD = """
import sys
import eventador as ev
from eventador.errors import NestingError

class Anything(ev.Event, event_type="test.limits.Anything"):
    value: object

value = 1
for _ in range(100_000):
    value = [value]
with ev.open_store(sys.argv[1]) as store:
    qm = ev.QueueManager(store)
    for attempt in (
        lambda: store.append("s", Anything(value=value)),
        lambda: store.append("s", Anything(value=1), metadata={"m": value}),
        lambda: qm.enqueue("q", {"m": value}),
    ):
        try:
            attempt()
        except NestingError as exc:
            print("refused", exc.limit)
    qm.close()
    store.append("s", Anything(value=1))
print("closed")
"""


def test_a_value_nested_100_000_deep_is_refused_without_crashing_the_process(tmp_path: Path) -> None:
    # Before the limit, cbor2's C encoder overflowed the stack: a segfault inside append.
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "s")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == [f"refused {MAX_NESTING}"] * 3 + ["closed", ""]
    with ev.open_store(tmp_path / "s", read_only=True) as store:
        assert [r.event.value for r in store.read_stream("s")] == [1]  # type: ignore[attr-defined]


# -- decimals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("special", ["sNaN", "NaN", "-NaN", "Infinity", "-Infinity"])
def test_decimals_that_are_not_numbers_are_refused_everywhere(store: ev.EventStore, special: str) -> None:
    bad = Decimal(special)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    attempts = {
        "Typed.amount": lambda: store.append(
            "s", Typed(count=1, small=1, ratio=1.0, flag=True, name="n", at=now, amount=bad)
        ),
        "Anything.value[0]": lambda: store.append("s", Anything(value=[bad])),
        "metadata.m": lambda: store.append("s", Anything(value=1), metadata={"m": bad}),
    }
    for path, attempt in attempts.items():
        with pytest.raises(ev.SerializationError, match="NaN or Infinity") as caught:
            attempt()
        assert caught.value.path == path
    assert store.stream_version("s") == 0


@pytest.mark.parametrize("amount", ["-0", "-0.00", "0E+5", "1E+999999", "-1E-999999", "1E+999999999999999999"])
def test_zeros_and_huge_exponents_read_back_equal(path: Path, store: ev.EventStore, amount: str) -> None:
    value = Decimal(amount)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store.append(
        "s", Typed(count=1, small=1, ratio=1.0, flag=True, name="n", at=now, amount=value), metadata={"m": value}
    )
    store.append("s", Anything(value={"amount": value}))
    seen = read_back_everywhere(path, store, "s")
    assert_all_equal(seen)
    assert seen[-1][0].event.amount == value  # type: ignore[attr-defined]
    assert seen[-1][1].event.value == {"amount": value}  # type: ignore[attr-defined]


# -- text ------------------------------------------------------------------------------------------------


def test_lone_surrogates_are_refused_naming_where(store: ev.EventStore) -> None:
    lone = "a\ud800b"
    with pytest.raises(ev.InvalidInputError, match=r"stream_id .*surrogate"):
        store.append(lone, Anything(value=1))
    with pytest.raises(ev.InvalidInputError, match=r"stream_id .*surrogate"):
        store.append_many([(lone, Anything(value=1))])
    cases: dict[str, Any] = {
        "Anything.value": lambda: store.append("s", Anything(value=lone)),
        "Anything.value.k": lambda: store.append("s", Anything(value={"k": [lone][0]})),
        "Anything.value['\\udfff']": lambda: store.append("s", Anything(value={"\udfff": 1})),
        "metadata.m": lambda: store.append("s", Anything(value=1), metadata={"m": lone}),
        "stream_type": lambda: store.append("s", Anything(value=1), stream_type=lone),
        "UnknownEvent.event_type": lambda: store.append("s", ev.UnknownEvent(event_type=lone, data={})),
    }
    for path, attempt in cases.items():
        with pytest.raises(ev.SerializationError, match="surrogate") as caught:
            attempt()
        assert caught.value.path == path
    with pytest.raises(ev.InvalidInputError, match=r"event_type .*surrogate"):

        class Bad(ev.Event, event_type=lone):
            value: int

    assert store.last_position == 0


def test_nul_and_characters_beyond_the_bmp_read_back_equal(path: Path, store: ev.EventStore) -> None:
    odd = "nul\x00 emoji\U0001f600 cjk\u4e2d ext\U00020000 rtl\u202e"
    store.append(
        odd,
        [Anything(value={odd: [odd]}), ev.UnknownEvent(event_type=odd, data={odd: odd})],
        metadata={odd: odd},
        stream_type=odd,
    )
    seen = read_back_everywhere(path, store, odd)
    assert_all_equal(seen)
    assert [r.event_type for r in seen[-1]] == ["test.limits.Anything", odd]
    assert seen[-1][0].metadata == {odd: odd} and seen[-1][0].stream_id == odd


# -- what append takes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "named"), [({"account_id": "a-1"}, "dict"), ("account_id", "str"), (b"raw", "bytes")]
)
def test_a_dict_or_a_string_for_events_is_refused_saying_what_to_pass(
    store: ev.EventStore, events: Any, named: str
) -> None:
    with pytest.raises(ev.SerializationError, match=f"expected an ev.Event or a list of them, not a {named}"):
        store.append("s", events)
    assert store.stream_version("s") == 0


@pytest.mark.parametrize("stream_id", [" ", "\t\n", "\u3000"])
def test_a_whitespace_only_stream_id_is_refused(store: ev.EventStore, stream_id: str) -> None:
    with pytest.raises(ev.InvalidInputError, match="whitespace"):
        store.append(stream_id, Anything(value=1))
    store.append(" padded ", Anything(value=1))  # whitespace around a name is the user's choice
    assert store.stream_version(" padded ") == 1


def test_numpy_and_pandas_scalars_are_stored_as_their_python_values(path: Path, store: ev.EventStore) -> None:
    at = pd.Timestamp("2026-01-01 12:00:00.000001", tz="UTC")
    event = Typed(
        count=np.int64(2**40),  # type: ignore[arg-type]
        small=np.uint8(7),  # type: ignore[arg-type]
        ratio=np.float32(0.5),  # type: ignore[arg-type]
        flag=np.bool_(True),  # type: ignore[arg-type]
        name=np.str_("ann"),
        at=at,
        amount=Decimal("1.5"),
        span=pd.Timedelta(seconds=3),
    )
    batch = [
        Typed(count=np.int32(i), small=1, ratio=np.float64(i), flag=False, name="b", at=at, amount=Decimal(i))  # type: ignore[arg-type]
        for i in range(5)
    ]
    store.append("np", [event, *batch], metadata={"n": np.int64(3), "when": at})
    store.append("np", Anything(value=[np.int16(1), np.float32(2.5), np.bool_(False)]))
    seen = read_back_everywhere(path, store, "np")
    assert_all_equal(seen)
    first = seen[0][0].event
    assert first == Typed(
        count=2**40, small=7, ratio=0.5, flag=True, name="ann", at=at.to_pydatetime(), amount=Decimal("1.5"),
        span=timedelta(seconds=3),
    )
    for name, kind in [("count", int), ("small", int), ("ratio", float), ("flag", bool), ("at", datetime)]:
        assert type(getattr(first, name)) is kind, name
    assert type(seen[-1][1].event.count) is int  # type: ignore[attr-defined]
    assert seen[-1][0].metadata == {"n": 3, "when": at.to_pydatetime()}
    assert seen[-1][-1].event.value == [1, 2.5, False]  # type: ignore[attr-defined]


def test_numpy_and_pandas_times_that_cannot_be_kept_are_refused_naming_the_fix(store: ev.EventStore) -> None:
    def typed(at: Any) -> Typed:
        return Typed(count=1, small=1, ratio=1.0, flag=True, name="n", at=at, amount=Decimal(1))

    with pytest.raises(ev.SerializationError, match="no time zone") as caught:
        store.append("s", typed(np.datetime64("2026-01-01T12:00:00")))
    assert caught.value.path == "Typed.at"
    with pytest.raises(ev.SerializationError, match="nanoseconds") as caught:
        store.append("s", typed(pd.Timestamp("2026-01-01 00:00:00.000000001", tz="UTC")))
    assert caught.value.path == "Typed.at"
    with pytest.raises(ev.SerializationError, match="naive"):
        store.append("s", typed(pd.Timestamp("2026-01-01")))
    assert store.stream_version("s") == 0


# -- properties ----------------------------------------------------------------------------------------

# Any code point, lone surrogates included: refused exactly when one is present.
odd_text = st.text(st.characters(codec=None, categories=None), max_size=8) | st.sampled_from(
    ["", "\x00", "\U0001f600", "a\ud800", "\udfff", "\u0000\U0010ffff"]
)
odd_decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [Decimal(s) for s in ("sNaN", "-0", "-0.000", "1E+999999", "-1E-999999", "9" * 60)]
)


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@st.composite
def deep_values(draw: st.DrawFn) -> tuple[Any, int]:
    """A value of random containers nested a random depth around the limit, and that depth."""
    target = draw(st.sampled_from([0, 1, 2, MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, MAX_NESTING + 5]))
    value: Any = draw(st.integers() | st.text(max_size=3) | st.none())
    depth = 0
    while depth < target:
        # A pair is two levels (a list holding a dict), so it is taken only where both fit.
        kind = draw(st.sampled_from(["list", "dict", "pair"] if target - depth >= 2 else ["list", "dict"]))
        value = [value] if kind == "list" else {"k": value} if kind == "dict" else [1, {"a": value, "b": "x"}]
        depth += 2 if kind == "pair" else 1
    return value, depth


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    stream_id=odd_text,
    event_type=odd_text,
    text=odd_text,
    amount=odd_decimals,
    deep=deep_values(),
    where=st.sampled_from(["field", "metadata"]),
)
def test_append_reads_back_equal_or_refuses_before_writing(
    tmp_path_factory: pytest.TempPathFactory,
    stream_id: str,
    event_type: str,
    text: str,
    amount: Decimal,
    deep: tuple[Any, int],
    where: str,
) -> None:
    value, depth = deep
    payload = {"text": text, "amount": [amount], "deep": value}
    path = tmp_path_factory.mktemp("prop") / "s"
    store = ev.open_store(path)
    try:
        events = [Anything(value=payload if where == "field" else 1)]
        if event_type.strip():
            events.append(ev.UnknownEvent(event_type=event_type, data={"t": text}))
        metadata = {"m": payload, text: 1} if where == "metadata" else None
        bad = (
            not stream_id.strip()
            or any(has_surrogate(t) for t in (stream_id, event_type, text))
            or not amount.is_finite()
            # The payload dict is one level; in metadata, the metadata dict is one more.
            or depth + (1 if where == "field" else 2) > MAX_NESTING
        )
        if bad:
            with pytest.raises(ev.EventadorError):
                store.append(stream_id, events, metadata=metadata)
            assert store.last_position == 0
            store.append("after", Anything(value=1))  # the store goes on
            stream_id, events, metadata = "after", [Anything(value=1)], None
        else:
            store.append(stream_id, events, metadata=metadata)
        seen = read_back_everywhere(path, store, stream_id)
        assert_all_equal(seen)
        assert [r.event for r in seen[-1]] == events
        assert seen[-1][0].metadata == (metadata or {})
    finally:
        store.close()


# -- a flush that fails ----------------------------------------------------------------------------------


def test_an_exception_inside_a_flush_keeps_the_log_and_the_store_closable(path: Path) -> None:
    # A warning turned into an error is a real exception raised in the middle of a flush
    # (an int beyond 64 bits warns while the Parquet file is built: its SQL column holds NULL).
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = Typed(count=2**63, small=1, ratio=1.0, flag=True, name="n", at=now, amount=Decimal("1"))
    store = ev.open_store(path)
    store.append("s", event)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(UserWarning):
            store.flush()
        assert [r.event for r in store.read_stream("s")] == [event]
        with pytest.raises(UserWarning):
            store.close()  # flushes again, fails again, and still lets go of the directory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # now the flush may go through
        with ev.open_store(path) as again:  # the same process: the lock was released
            assert [r.event for r in again.read_stream("s")] == [event]
            again.append("s", Anything(value=1))
    with ev.open_store(path, read_only=True) as reader:
        assert [r.event for r in reader.read_stream("s")] == [event, Anything(value=1)]


def test_a_too_deep_value_in_an_imported_column_is_refused_naming_row_and_column() -> None:
    rows = encode_rows({"case": ["a", "b"], "attrs": [nested(2), nested(MAX_NESTING)]})
    assert [decode_value(r)["attrs"] for r in rows] == [nested(2), nested(MAX_NESTING)]
    with pytest.raises(NestingError) as caught:
        encode_rows({"case": ["a", "b"], "attrs": [nested(2), nested(MAX_NESTING + 1)]})
    assert caught.value.path.startswith("row 1, column 'attrs'")
