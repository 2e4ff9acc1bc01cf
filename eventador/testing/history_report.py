"""What ``check_history`` found (``eventador.testing.history``): stored field sets, failures, the report.

The report prints itself as ``eventador schema`` shows it (``str``), as JSON-ready data
(``to_dict``) and as a table in a notebook (``_repr_html_``); its ``repr`` is one line.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

__all__ = ["HistoryFailure", "HistoryReport", "StoredShape"]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredShape:
    """One stored (event type, schema version, field set): how many events, and how they read now."""

    event_type: str
    schema_version: int
    fields: tuple[str, ...]
    """The keys of the stored payloads, sorted."""
    events: int
    first_position: int
    upcasters: tuple[str, ...]
    """The upcasters that apply, in turn (empty: none)."""
    reads_as: str | None
    """The event type the events read as, after upcasting; None if the chain failed."""
    class_label: str | None
    """``module:Class`` of the class that reads them; None: no class (they read as ``UnknownEvent``)."""
    class_version: int | None
    unknown_fields: tuple[str, ...]
    """Stored fields the class no longer has: kept in the log, not read."""
    defaulted_fields: tuple[str, ...]
    """Fields of the class the stored events lack, filled from the class's defaults."""
    checked: int
    """Events decoded: all of them, or the first of this field set."""
    failing: int
    """How many do not read (a ``SchemaError``, or no class when that is not allowed); when only
    the first was checked, all of them if it does not."""
    error: str | None
    """The first failure's message, naming the position."""
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failing

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryFailure:
    """Stored events of one (type, version) that do not read, for one reason (`field`, if one is named)."""

    event_type: str
    schema_version: int
    field: str | None
    events: int
    first_position: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """One line: the (type, version, field), how many events, and the first one's error."""
        field = f", field {self.field!r}" if self.field is not None else ""
        does = "does" if self.events == 1 else "do"
        return f"{self.event_type} v{self.schema_version}{field}: {_events(self.events)} {does} not read; " \
            f"the first: {self.message}"


@dataclasses.dataclass(frozen=True)
class HistoryReport:
    """What ``check_history`` found: the stored shapes, how they read, and what does not.

    ``ok`` is True when every stored event reads under this process's classes.
    ``str(report)`` (and ``report.lines()``) is the text ``eventador schema`` prints;
    in a notebook the report shows as a table.
    """

    path: str | None
    events: int
    shapes: tuple[StoredShape, ...]
    failures: tuple[HistoryFailure, ...]
    every_event: bool
    allow_unknown: bool

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failing_events(self) -> int:
        return sum(f.events for f in self.failures)

    @property
    def unknown_fields(self) -> dict[tuple[str, int], tuple[str, ...]]:
        """(stored type, version) -> the stored fields the class no longer has (kept in the log)."""
        found: dict[tuple[str, int], set[str]] = {}
        for shape in self.shapes:
            if shape.unknown_fields:
                found.setdefault((shape.event_type, shape.schema_version), set()).update(shape.unknown_fields)
        return {key: tuple(sorted(names)) for key, names in found.items()}

    def verdict(self) -> str:
        """One line: every stored event reads, or how many do not."""
        how = "each stored event read" if self.every_event else "judged by the first event of each field set"
        if self.ok:
            return f"ok: every stored event reads under this process's classes ({how})"
        kinds = len({(f.event_type, f.schema_version) for f in self.failures})
        return (
            f"FAILS: {self.failing_events:,} stored event(s) of {kinds} (type, version) do not read "
            f"under this process's classes ({how})"
        )

    def unknown_field_lines(self) -> list[str]:
        """The report of stored fields the classes no longer have, one line per (type, version)."""
        return [
            f"  {event_type} v{version}: {', '.join(names)}"
            for (event_type, version), names in sorted(self.unknown_fields.items())
        ]

    def lines(self) -> list[str]:
        """The report as text, as ``eventador schema`` prints it."""
        types = len({s.event_type for s in self.shapes})
        out = [f"{self.path or 'the store'}: {_events(self.events)} of {types} event type(s)"]
        current = None
        for shape in self.shapes:
            if shape.event_type != current:
                current = shape.event_type
                out.append("")
                out.append(current)
            out.append(
                f"  v{shape.schema_version}  {_events(shape.events)} from position {shape.first_position}"
                f"  fields: {', '.join(shape.fields) or '(none)'}"
            )
            for up in shape.upcasters:
                out.append(f"      upcast {up}")
            if shape.class_label is not None:
                out.append(f"      reads as {shape.reads_as} v{shape.class_version} ({shape.class_label})")
            elif shape.reads_as is not None:
                out.append(f"      no class for {shape.reads_as} in this process: reads as UnknownEvent")
            if shape.defaulted_fields:
                out.append(f"      from the class's defaults: {', '.join(shape.defaulted_fields)}")
            if shape.unknown_fields:
                out.append(f"      kept in the log, not in the class: {', '.join(shape.unknown_fields)}")
            out.extend(f"      note: {note}" for note in shape.notes)
            if not self.every_event:
                verdict = "FAILS: its first event does not read" if shape.failing else "ok: its first event reads"
                out.append(f"      {verdict}")
            elif shape.failing:
                out.append(f"      FAILS: {shape.failing:,} of its {_events(shape.events)} do not read")
            else:
                out.append(f"      ok: {'it reads' if shape.events == 1 else f'all {shape.events:,} read'}")
        out.append("")
        out.append(self.verdict())
        out.extend(f"  {failure.line()}" for failure in self.failures)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"{self.failing_events:,} events do not read"
        return f"HistoryReport({state}, {_events(self.events)}, {len(self.shapes)} stored field sets)"

    def _repr_html_(self) -> str:
        head = ["event type", "version", "events", "fields", "upcasters", "reads as", "not in the class", "reads"]
        rows = []
        for s in self.shapes:
            reads_as = f"{s.reads_as} v{s.class_version}" if s.class_label else f"{s.reads_as} (no class)"
            status = f"FAILS: {s.error}" if s.failing else f"ok ({s.checked:,} read)"
            cells = [
                s.event_type, f"v{s.schema_version}", f"{s.events:,}", ", ".join(s.fields),
                "; ".join(s.upcasters), reads_as, ", ".join(s.unknown_fields), status,
            ]
            style = " style='color:#b00'" if s.failing else ""
            rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        return (
            f"<div><strong>{html.escape(self.verdict())}</strong>"
            f"<table><tr>{header}</tr>{''.join(rows)}</table></div>"
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``eventador schema --format json``)."""
        return {
            "path": self.path,
            "events": self.events,
            "ok": self.ok,
            "every_event": self.every_event,
            "shapes": [s.to_dict() for s in self.shapes],
            "failures": [f.to_dict() for f in self.failures],
        }


def _events(n: int) -> str:
    return f"{n:,} event" + ("" if n == 1 else "s")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
