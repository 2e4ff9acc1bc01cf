"""The lake's payload_json built from the typed columns (store/lake_json.py) holds what the
per-row CBOR decode gives, for every kind of field, and falls back to it where it must."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq

import eventador as ev
from eventador.codec import decode_value
from eventador.store.lake_json import payload_json


@dataclass(frozen=True)
class JsonPoint:
    x: int
    label: str


class JsonEverything(ev.Event, event_type="lake.json.Everything"):
    flag: bool
    count: int
    ratio: float
    name: str
    day: date
    at: datetime
    id: uuid.UUID
    price: Decimal
    fee: Annotated[Decimal, ev.Digits(18, 2)]
    tags: list[str]
    point: JsonPoint
    weights: dict[str, Decimal]
    maybe: int | None = None


class JsonOdd(ev.Event, event_type="lake.json.Odd"):  # kinds whose JSON only Python writes
    blob: bytes
    wait: timedelta
    members: set[int]


def old_payload_json(raw: bytes) -> str:
    """The per-row path the publisher used before: CBOR decoded, JSON encoded in Python."""
    return json.JSONEncoder(default=str).encode(decode_value(raw))


def same(new: dict[str, Any], old: dict[str, Any], path: str = "") -> None:
    """`new` holds `old`'s values: times as the same instant, decimal text as the same number."""
    assert new.keys() == old.keys(), path
    for key, want in old.items():
        got = new[key]
        if isinstance(want, dict):
            same(got, want, f"{path}.{key}")
        elif isinstance(want, str) and isinstance(got, str) and got != want:
            try:
                assert datetime.fromisoformat(got) == datetime.fromisoformat(want), f"{path}.{key}"
            except ValueError:
                assert Decimal(got) == Decimal(want), f"{path}.{key}: {got!r} != {want!r}"
        else:
            assert got == want, f"{path}.{key}"


def test_payload_json_from_columns_holds_the_decoded_payloads(tmp_path: Path) -> None:
    tz = timezone(timedelta(hours=2))
    events: list[ev.Event] = [
        JsonEverything(
            flag=i % 2 == 0, count=i - 3, ratio=i / 3, name=f"n\u00e9{i}\"'", day=date(2024, 1, 1 + i),
            at=datetime(2024, 5, 1, 12, 0, i, i * 1000 if i % 2 else 0, tzinfo=UTC if i % 3 else tz),
            id=uuid.UUID(int=i), price=Decimal("1.50") * i - Decimal("2.125"), fee=Decimal("1E+2") - Decimal("0.5") * i,
            tags=["a", f"b{i}"],
            point=JsonPoint(i, "p"), weights={"w": Decimal("0.10")}, maybe=None if i % 2 else i,
        )
        for i in range(6)
    ]
    events.append(JsonOdd(blob=b"\x00ab", wait=timedelta(days=1, seconds=3), members={1, 2}))
    events.append(ev.UnknownEvent(event_type="lake.json.Free", data={"n": 1, "nested": {"k": [1, "x"]}}))
    events.append(ev.UnknownEvent(event_type="lake.json.Free", data={"n": "one"}))
    with ev.open_store(tmp_path / "s") as store:
        for i, event in enumerate(events):
            store.append(f"s-{i}", [event])
        store.flush()
        classes = store.registry.classes()
        table = pq.read_table(store.state().segments[-1].path)
    built = payload_json(table, classes).to_pylist()
    old = [old_payload_json(raw) for raw in table.column("payload").to_pylist()]
    for row, (new_text, old_text) in enumerate(zip(built, old, strict=True)):
        same(json.loads(new_text), json.loads(old_text), f"row {row}")
    # The rows with every field set came from the columns (DuckDB's compact JSON); those with a
    # None, of Python-only kinds or of a type with no class read exactly as before.
    from_columns = [row for row, (n, o) in enumerate(zip(built, old, strict=True)) if n != o]
    assert from_columns == [0, 2, 4]


def test_the_lake_table_holds_payload_json_of_every_row(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None)) as store:
        store.append("a", [JsonOdd(blob=b"x", wait=timedelta(0), members=set())])
        store.append("b", [ev.UnknownEvent(event_type="lake.json.Free", data={"n": 2})])
        store.flush()
        assert store.lake is not None
        store.lake.sync()
    rows = DeltaTable(str(lake)).to_pyarrow_dataset().to_table(columns=["position", "payload_json"])
    texts = dict(zip(rows.column("position").to_pylist(), rows.column("payload_json").to_pylist(), strict=True))
    assert json.loads(texts[2]) == {"n": 2}
    assert json.loads(texts[1])["members"] == "set()"


class JsonEdges(ev.Event, event_type="lake.json.Edges"):
    amount: Decimal
    ratio: float
    note: str
    extra: dict[str, float]


def test_values_whose_column_text_is_not_their_json_are_decoded(tmp_path: Path) -> None:
    events = [
        JsonEdges(amount=Decimal(0), ratio=2.0, note='q"\\', extra={"a": 1.5}),  # from the columns
        JsonEdges(amount=Decimal("1E-7"), ratio=0.5, note="n", extra={}),  # Arrow writes 1E-7
        JsonEdges(amount=Decimal(1), ratio=0.5, note="two\nlines", extra={}),  # a control character
        JsonEdges(amount=Decimal(1), ratio=0.5, note="n", extra={"a": float("nan")}),  # NaN is not JSON
    ]
    with ev.open_store(tmp_path / "s") as store:
        for i, event in enumerate(events):
            store.append(f"s-{i}", [event])
        store.flush()
        table = pq.read_table(store.state().segments[-1].path)
        built = payload_json(table, store.registry.classes()).to_pylist()
    old = [old_payload_json(raw) for raw in table.column("payload").to_pylist()]
    assert json.loads(built[0]) == {"amount": "0", "ratio": 2.0, "note": 'q"\\', "extra": {"a": 1.5}}
    assert isinstance(json.loads(built[0])["ratio"], float)  # Arrow's text of 2.0 is "2"
    assert built[1:] == old[1:]
