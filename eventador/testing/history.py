"""Does the stored history still read? ``check_history`` looks, ``assert_history_reads`` asserts.

An event log outlives the classes that wrote it. ``check_history`` reads a store's
events as stored: for each event type, the schema versions it was written with, and
for each version the field sets its payloads hold (the keys of the stored CBOR maps;
a class changed without a new version shows as a second field set), with their
counts. Then it asks whether the classes and upcasters defined in this process (after
importing `modules`) read them: for each stored (type, version, field set) the
upcaster chain that applies, the class it reads as and that class's version, the
stored fields the class no longer has (kept in the log, not read), the fields filled
from defaults, and each ``SchemaError`` with its position.

``eventador schema DIR`` prints the report, judging each field set by its first
event; ``assert_history_reads`` is the check for a CI job run against a copy of a
real store: the whole history is read through ``read_all`` as the application reads
it, and where some events do not read, each stored event is decoded to count them.
It fails listing each (type, version, field) that does not read::

    from eventador.testing import assert_history_reads

    def test_production_history_still_reads():
        assert_history_reads("tests/data/bank-copy", modules=["bank.events"])

Cost: one scan of every payload (DuckDB streams them; each is CBOR-decoded once to
learn its keys), about 4 s per million events, then (`every_event`) ``read_all``. The
store is opened read-only, so a writer may run meanwhile.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventador.codec import Decoder, class_label, decode_value, make_decoder, schema_of
from eventador.errors import InvalidInputError, SchemaError
from eventador.messages import TypeRegistry, UnknownEvent
from eventador.progress import bar, wanted
from eventador.store import EventStore, open_store
from eventador.testing.history_report import HistoryFailure, HistoryReport, StoredShape
from eventador.upcasting import Convert, Split, Step, Upcaster, UpcasterRegistry, upcasters

__all__ = ["assert_history_reads", "check_history", "import_modules"]

_SCAN_BATCH = 65_536  # rows per Arrow batch from DuckDB: one progress step


def import_modules(modules: Iterable[str]) -> None:
    """Returns nothing; imports each module (defining event classes, registering upcasters).

    Raises:
        InvalidInputError: a module cannot be found, or its import fails (naming it).
    """
    for name in [modules] if isinstance(modules, str) else modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                raise InvalidInputError(f"no module named {name!r}: is its directory on sys.path?") from exc
            raise InvalidInputError(f"importing module {name!r} failed: {exc}") from exc
        except Exception as exc:
            raise InvalidInputError(f"importing module {name!r} failed: {type(exc).__name__}: {exc}") from exc


def check_history(
    store: EventStore | str | os.PathLike[str],
    *,
    modules: Iterable[str] = (),
    every_event: bool = True,
    allow_unknown: bool = False,
    progress: bool | None = None,
) -> HistoryReport:
    """Returns how every stored event reads under this process's classes and upcasters.

    `store`: an open store, or the directory of one (opened read-only). `modules`
    are imported first. `every_event`: read the whole history through ``read_all``
    (and, if some events do not read, decode each stored event to count them); else
    decode only the first event of each stored (type, version, field set), which
    stands for the rest of it. `allow_unknown`: events whose type has no class here
    (they read as ``UnknownEvent``) are fine; by default they count as not read.
    `progress`: a bar over the scans (default: for long ones in a terminal or notebook).

    Raises:
        InvalidInputError: no store there, or a module cannot be imported.
    """
    import_modules(modules)
    with _opened(store) as opened:
        path = None if opened.path is None else str(opened.path)
        decode = make_decoder(opened.registry, upcasters)
        total, tallies = _scan(opened, None, progress)
        problem = _read_all_problem(opened, total, allow_unknown, progress) if every_event else None
        if every_event and problem is None:
            for tally in tallies.values():
                tally.checked = tally.events
        elif every_event:  # decode each stored event, to count those that do not read, by field set
            total, tallies = _scan(opened, decode, progress)
        found = sorted(tallies.items(), key=lambda item: (item[0][0], item[0][1], item[1].first))
        if not every_event:  # the first event of each field set stands for all of it
            for (event_type, version, _), tally in found:
                tally.check(decode, event_type, version, tally.payload, tally.first)
                tally.stand_for_all()
        shapes = [_shape(key, tally, opened.registry, upcasters, allow_unknown) for key, tally in found]
        failures = _failures(shapes, [tally for _, tally in found], allow_unknown)
        if problem is not None and not failures:  # read_all failed where decoding each payload did not
            failures = [problem]
    return HistoryReport(path, total, tuple(shapes), tuple(failures), every_event, allow_unknown)


def assert_history_reads(
    store: EventStore | str | os.PathLike[str],
    *,
    modules: Iterable[str] = (),
    every_event: bool = True,
    allow_unknown: bool = False,
) -> HistoryReport:
    """Returns the ``check_history`` report when every stored event reads under today's classes.

    For a CI job run against a copy of a real store: every stored event is read
    through ``read_all``, upcast to today's classes (not a sample, unless
    ``every_event=False``). See ``check_history`` for the arguments.

    Raises:
        AssertionError: some stored events do not read; the message lists each failing
            (type, version, field) with its count and first position, and the stored
            fields the classes no longer have.
    """
    report = check_history(store, modules=modules, every_event=every_event, allow_unknown=allow_unknown)
    if not report.ok:
        lines = [report.verdict(), *(f"  {failure.line()}" for failure in report.failures)]
        unknown = report.unknown_field_lines()
        if unknown:
            lines += ["stored fields the classes no longer have (kept in the log, not read):", *unknown]
        raise AssertionError("\n".join(lines))
    return report


@contextmanager
def _opened(store: EventStore | str | os.PathLike[str]) -> Iterator[EventStore]:
    if isinstance(store, EventStore):
        yield store
        return
    with open_store(store, read_only=True) as opened:
        yield opened


class _Tally:
    """What the scan saw of one stored (type, version, field set)."""

    __slots__ = ("checked", "events", "failures", "first", "payload", "unknown")

    def __init__(self, position: int, payload: bytes) -> None:
        self.events = 0
        self.first, self.payload = position, payload
        self.checked = 0
        self.unknown = 0  # decoded to an UnknownEvent: no class
        self.failures: dict[str | None, list[Any]] = {}  # field -> [count, first position, message]

    def check(self, decode: Decoder, event_type: str, version: int, payload: bytes, position: int) -> None:
        """Decode one stored event as ``read_all`` does, and count how it went."""
        self.checked += 1
        try:
            event = decode(event_type, payload, version)
        except SchemaError as exc:
            self.failed(exc, position)
        else:
            if isinstance(event, UnknownEvent):
                self.unknown += 1

    def stand_for_all(self) -> None:
        """Count the events of the field set as its one checked event went (which fields
        a stored event has decides whether it reads, unless an upcaster looks at values)."""
        self.unknown = self.events if self.unknown else 0
        for entry in self.failures.values():
            entry[0] = self.events

    def failed(self, exc: SchemaError, position: int) -> None:
        entry = self.failures.get(exc.field)
        if entry is None:
            self.failures[exc.field] = [1, position, _located(exc, position)]
            return
        entry[0] += 1
        if position < entry[1]:  # the scan is not in position order: keep the first one's message
            entry[1:] = [position, _located(exc, position)]


def _located(exc: SchemaError, position: int) -> str:
    return str(exc if exc.position is not None else exc.at(position))


_Key = tuple[str, int, frozenset[str]]


def _scan(
    store: EventStore, decode: Decoder | None, progress: bool | None
) -> tuple[int, dict[_Key, _Tally]]:
    """Every stored event's type, version and payload keys, tallied; each decoded too when `decode` is given."""
    columns = store.sql("SELECT * FROM _all LIMIT 0").columns
    version = "coalesce(schema_version, 1)" if "schema_version" in columns else "1"
    (total,) = store.sql("SELECT count(*) FROM _all").fetchall()[0]
    rows = store.sql(f"SELECT event_type, {version}, position, payload FROM _all")
    # DuckDB 1.x names it fetch_record_batch; 2.x to_arrow_reader (and deprecates the old name).
    reader = rows.to_arrow_reader(_SCAN_BATCH) if hasattr(rows.relation, "to_arrow_reader") \
        else rows.fetch_record_batch(_SCAN_BATCH)
    tallies: dict[_Key, _Tally] = {}
    shown = bar(total, "reading stored events", wanted(progress, total))
    try:
        for batch in reader:
            values = zip(*(column.to_pylist() for column in batch.columns), strict=True)
            for event_type, stored_version, position, payload in values:
                data = decode_value(payload)
                key = (event_type, stored_version, frozenset(data) if isinstance(data, dict) else frozenset())
                tally = tallies.get(key)
                if tally is None:
                    tally = tallies[key] = _Tally(position, payload)
                elif position < tally.first:
                    tally.first, tally.payload = position, payload
                tally.events += 1
                if decode is not None:
                    tally.check(decode, event_type, stored_version, payload, position)
            shown.update(batch.num_rows)
    finally:
        shown.close()
    return total, tallies


def _shape(key: _Key, tally: _Tally, registry: TypeRegistry, ups: UpcasterRegistry, allow_unknown: bool) -> StoredShape:
    """How the first stored event of a field set reads: its upcaster chain, class and fields."""
    event_type, version, keys = key
    data = decode_value(tally.payload)
    chain, reads_as, reached = _chain(ups, event_type, version, data if isinstance(data, dict) else {})
    cls = registry.resolve(reads_as) if reads_as is not None else None
    unknown: tuple[str, ...] = ()
    defaulted: tuple[str, ...] = ()
    notes: list[str] = []
    if cls is not None and reached is not None:
        schema = schema_of(cls)
        unknown = tuple(sorted(set(reached) - set(schema.names)))
        defaulted = tuple(n for n in schema.names if n not in reached and n in schema.defaults)
        if not chain and version > cls.schema_version:
            notes.append(f"stored at version {version}, newer than the class's version {cls.schema_version}")
    failing = sum(entry[0] for entry in tally.failures.values())
    error = min(tally.failures.values(), key=lambda entry: entry[1])[2] if tally.failures else None
    if tally.unknown and not allow_unknown:
        failing += tally.unknown
        error = error or _no_class(event_type, reads_as, tally.first)
    return StoredShape(
        event_type, version, tuple(sorted(keys)), tally.events, tally.first, chain, reads_as,
        None if cls is None else class_label(cls), None if cls is None else cls.schema_version,
        unknown, defaulted, tally.checked, failing, error, tuple(notes),
    )


def _chain(
    ups: UpcasterRegistry, event_type: str, version: int, data: dict[str, Any]
) -> tuple[tuple[str, ...], str | None, dict[str, Any] | None]:
    """The upcasters that apply to one stored payload, described; the type it reaches and its
    fields then (None, None if an upcaster fails: decoding says why)."""
    steps: list[str] = []
    seen = set()
    while (up := ups.get(event_type, version)) is not None and (event_type, version) not in seen:
        seen.add((event_type, version))
        steps.append(_describe(up))
        try:
            event_type, version, data = up.apply(data)
        except Exception:
            return tuple(steps), None, None
    return tuple(steps), event_type, data


def _describe(up: Upcaster) -> str:
    """One upcaster as the report shows it: ``v1 -> v2: Rename(...), Add(...)``."""
    if isinstance(up.to_type, Split):
        target = f"Split({_name(up.to_type.python)}) "
    else:
        target = "" if up.to_type == up.event_type else f"{up.to_type} "
    steps = ", ".join(map(_step_text, up.steps))
    return f"v{up.from_version} -> {target}v{up.to_version}" + (f": {steps}" if steps else "")


def _step_text(step: Step) -> str:
    if isinstance(step, Convert):  # its callable's repr says little
        return f"Convert({step.name!r})"
    function = getattr(step, "function", None)  # a plain function of the payload
    return repr(step) if function is None else f"{_name(function)}()"


def _name(function: Any) -> str:
    return str(getattr(function, "__qualname__", function))


def _no_class(event_type: str, reads_as: str | None, position: int) -> str:
    renamed = f" (upcast from {event_type!r})" if reads_as not in (None, event_type) else ""
    return (
        f"{reads_as or event_type} at position {position}: no class for this event type{renamed} in this "
        f"process, so it reads as UnknownEvent; import the module that defines it (--module M, or "
        f"modules=[...]), or allow types without a class (--allow-unknown, allow_unknown=True)"
    )


def _failures(shapes: Sequence[StoredShape], tallies: Sequence[_Tally], allow_unknown: bool) -> list[HistoryFailure]:
    """The failing events, by stored (type, version) and field, over every field set."""
    merged: dict[tuple[str, int, str | None], list[Any]] = {}

    def add(event_type: str, version: int, field: str | None, count: int, position: int, message: str) -> None:
        entry = merged.setdefault((event_type, version, field), [0, position, message])
        entry[0] += count
        if position < entry[1]:
            entry[1:] = [position, message]

    for shape, tally in zip(shapes, tallies, strict=True):
        for field, (count, position, message) in tally.failures.items():
            add(shape.event_type, shape.schema_version, field, count, position, message)
        if tally.unknown and not allow_unknown:
            add(shape.event_type, shape.schema_version, None, tally.unknown, shape.first_position,
                _no_class(shape.event_type, shape.reads_as, shape.first_position))
    return [
        HistoryFailure(event_type, version, field, count, position, message)
        for (event_type, version, field), (count, position, message) in sorted(
            merged.items(), key=lambda item: (item[0][0], item[0][1], item[1][1])
        )
    ]


def _read_all_problem(
    store: EventStore, total: int, allow_unknown: bool, progress: bool | None
) -> HistoryFailure | None:
    """The first event ``read_all`` does not read, as the application would meet it: a
    ``SchemaError``, or (unless `allow_unknown`) an event of a type without a class; None: all read."""
    shown = bar(total, "reading through read_all", wanted(progress, total))
    try:
        for batch in store.read_batches():
            if not allow_unknown:
                for record in batch:
                    if type(record.event) is UnknownEvent:
                        message = _no_class(record.event_type, record.event_type, record.position)
                        return HistoryFailure(record.event_type, record.schema_version, None, 1, record.position,
                                              message)
            shown.update(len(batch))
    except SchemaError as exc:
        return HistoryFailure(exc.event_type, exc.version, exc.field, 1, exc.position or 0, f"read_all: {exc}")
    finally:
        shown.close()
    return None
