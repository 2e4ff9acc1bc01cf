"""Aggregate roots: persistent actors whose state is a value changed only by their own events.

An ``AggregateRoot`` has pure ``handle_command(state, command) -> events`` and
``apply_event(state, event) -> state``; the framework decides, folds, appends and
stamps. ``eventador.aggregates.repository.Repository`` runs the same aggregates
synchronously, from scripts and notebooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar, cast

from eventador.actors.actor import BatchHandler, Outcome
from eventador.aggregates.persistent import PersistentActor
from eventador.aggregates.recovery import as_events, stamp
from eventador.errors import CommandRejected, InvalidInputError, SerializationError
from eventador.messages import Command, Event, State, fields_html
from eventador.store.reads import Replay
from eventador.store.records import micros_to_datetime
from eventador.store.segments import paused_gc

__all__ = ["AggregateRoot", "fold"]

S = TypeVar("S", bound=State)


_PAUSE_GC_FROM = 64  # events folded at once from which the cyclic collector waits


def _apply_all(apply: Callable[[S, Event], S], state: S, events: Sequence[Event]) -> tuple[S, S]:
    """The state before the last event and after all of them."""
    before_last = state
    for event in events:
        before_last = state
        state = apply(state, event)
    return before_last, state


def fold(aggregate: AggregateRoot[S], state: S, events: Sequence[Event]) -> tuple[S, S]:
    """Returns the state before the last of `events` and after all of them, folded into
    `state` by ``aggregate.apply_event`` (what its commands, recovery and the repository do).

    For a replay the cyclic collector waits meanwhile: it allocates a state per event,
    and the collections that would trigger cost more than the fold (and vary run to run).

    Raises:
        InvalidInputError: ``apply_event`` returned something that is not an ``ev.State``.
    """
    if len(events) < _PAUSE_GC_FROM:  # a command's events: pausing would cost more than it saves
        before_last, state = _apply_all(aggregate.apply_event, state, events)
    else:
        with paused_gc():
            before_last, state = _apply_all(aggregate.apply_event, state, events)
    if not isinstance(state, State):
        raise InvalidInputError(f"{type(aggregate).__name__}.apply_event returned {state!r}, not an ev.State")
    return before_last, state


class AggregateRoot(PersistentActor, Generic[S]):
    """A persistent actor whose state is a value ``S`` changed only by its own events.

    Define ``initial_state`` (a property), ``handle_command(state, command)`` (returns
    the events to persist, or raises ``ev.CommandRejected``) and ``apply_event(state,
    event)`` (returns the next state; pure). ``command_handler`` ties them together:
    decide, fold the new events (so a failing ``apply_event`` persists nothing), append
    them in one atomic append, and return the new state (what ``ask`` answers).

    After every command and after recovery the framework sets two fields of the
    state: ``version`` is always the stream version, and ``last_modified`` is the time
    of the last event (its ``occurred_at``: the store clock's reading when the command
    was handled) unless the ``apply_event`` of that last event set it. Snapshots store
    the state itself, with its class name and field-layout fingerprint.

    Spawn aggregates with ``supervisor=ev.Supervisor.resume()``: a rejected command
    leaves the state unchanged, and after a ``ConcurrencyError`` the instance catches
    up by itself, so restarting it (the default) would only cost a recovery.

    >>> import asyncio, eventador as ev
    >>> class Deposited(ev.Event, event_type="doc.Deposited"):
    ...     amount: int
    >>> class Deposit(ev.Command):
    ...     amount: int
    >>> class Balance(ev.State):
    ...     balance: int = 0
    >>> class Account(ev.AggregateRoot[Balance]):
    ...     @property
    ...     def initial_state(self) -> Balance:
    ...         return Balance()
    ...     def handle_command(self, state: Balance, command: ev.Command) -> list[ev.Event]:
    ...         if isinstance(command, Deposit) and command.amount <= 0:
    ...             raise ev.CommandRejected("deposits must be positive")
    ...         return [Deposited(amount=command.amount)] if isinstance(command, Deposit) else []
    ...     def apply_event(self, state: Balance, event: ev.Event) -> Balance:
    ...         return state.copy_with(balance=state.balance + event.amount) if isinstance(event, Deposited) else state
    >>> account = Account(persistence_id="acc-1", event_store=ev.open_store())
    >>> asyncio.run(account.on_message(Deposit(amount=5))).balance
    5
    """

    _state: S | None = None

    @property
    def initial_state(self) -> S:
        """Returns the state before the first event.

        Raises:
            NotImplementedError: a subclass must define it.
        """
        raise NotImplementedError(f"{type(self).__name__} must define the initial_state property")

    def handle_command(self, state: S, command: Command) -> Sequence[Event]:
        """Returns the events `command` causes in `state` (empty: nothing happens); pure.

        Raises:
            CommandRejected: a business rule refuses the command; nothing is persisted.
        """
        raise NotImplementedError(f"{type(self).__name__} must define handle_command(state, command)")

    def apply_event(self, state: S, event: Event) -> S:
        """Returns the state after `event`; pure, and must accept every event it ever produced."""
        raise NotImplementedError(f"{type(self).__name__} must define apply_event(state, event)")

    @property
    def state(self) -> S:
        """Returns the current state (``initial_state`` before recovery and before any event)."""
        state = self._state
        if state is None:
            state = self._state = self.initial_state
        return state

    async def command_handler(self, command: Any) -> S:
        """Returns the state after `command`: its events are persisted and applied.

        Costs ``handle_command``, one ``apply_event`` per new event and one append.

        Raises:
            CommandRejected: from ``handle_command``; nothing was persisted.
            ConcurrencyError: another writer appended first; nothing was persisted.
        """
        ((ok, answer),) = await self._handle_commands([command])  # one command: one outcome
        if not ok:
            raise answer
        return cast(S, answer)

    def _batch_handler(self) -> BatchHandler | None:
        # Only when commands reach handle_command the ordinary way: an override of
        # on_message or command_handler may do anything, so it sees one message at a time.
        cls = type(self)
        if cls.command_handler is AggregateRoot.command_handler and cls.on_message is PersistentActor.on_message:
            return self._handle_commands
        return None

    async def _handle_commands(self, commands: list[Any]) -> list[Outcome]:
        """Handles queued commands as one after another would, and writes all their events
        in one append: one lock, one log record and one fsync for the lot. A command on
        its own (``command_handler``) is a batch of one: both ways run this code.

        Each command is decided on the state after the ones before it, and each answer is
        the state after its own command. Returns an outcome for each of a prefix of
        `commands`: it stops after a failure (not a rejection), and when the append fails
        the first command with events takes the error, as it would have alone; the
        commands after it are handled again later (``handle_command`` is pure). When an
        event cannot be stored and several commands had events, they are handled again one
        at a time, so that only the command whose event is bad fails.
        """
        if not self._recovered or self._stale:
            await self._ensure_current()
        where = f"{type(self).__name__}.handle_command"
        state = self.state
        version = self._sequence_number
        when = self.event_store.clock.now()
        events: list[Event] = []
        outcomes: list[Outcome] = []
        first_writer = last_writer = -1  # the first and last commands with events
        for command in commands:
            try:
                produced = as_events(self.handle_command(state, command), where)
                if produced:
                    before_last, after = fold(self, state, produced)
                    version += len(produced)
                    state = stamp(before_last, after, version, when)
                    if first_writer < 0:
                        first_writer = len(outcomes)
                    last_writer = len(outcomes)
                    events.extend(produced)
            except CommandRejected as rejected:
                outcomes.append((False, rejected))
                continue
            except Exception as failed:
                outcomes.append((False, failed))
                break
            outcomes.append((True, state))
        if not events:
            return outcomes
        try:
            await self._append(events, metadata=None, occurred_at=when)
        except (SerializationError, InvalidInputError) as failed:  # checked before writing: nothing was written
            if first_writer == last_writer:  # only one command had events: the bad event is its own
                return [*outcomes[:first_writer], (False, failed)]
            return [*outcomes[:first_writer], *await self._one_by_one(commands[first_writer : len(outcomes)])]
        except Exception as failed:
            return [*outcomes[:first_writer], (False, failed)]
        self._state = state
        self._sequence_number = version
        self._since_snapshot += len(events)
        if self.snapshot_config is not None:
            try:
                await self._maybe_snapshot()
            except Exception as failed:  # the events are stored: the last command answers for it
                return [*outcomes[:last_writer], (False, failed)]
        return outcomes

    async def _one_by_one(self, commands: list[Any]) -> list[Outcome]:
        """Each command as a batch of one, until one fails (a rejection is not a failure)."""
        outcomes: list[Outcome] = []
        for command in commands:
            outcomes += await self._handle_commands([command])
            ok, answer = outcomes[-1]
            if not ok and not isinstance(answer, CommandRejected):
                break
        return outcomes

    async def persist_events(self, events: Iterable[Event], *, metadata: dict[str, Any] | None = None) -> int:
        """Returns the stream's new version, once `events` are folded, stored (all or none) and applied.

        ``apply_event`` runs before the append, so an event it cannot apply is never
        stored. See ``PersistentActor.persist_events`` for costs.

        Raises:
            ConcurrencyError: another writer appended first; nothing was stored.
            SerializationError: an event cannot be stored; nothing was stored.
        """
        batch = as_events(events, "persist_events")
        if not self._recovered or self._stale:
            await self._ensure_current()
        if not batch:
            return self._sequence_number
        return await self._persist(batch, metadata)

    async def _persist(self, batch: list[Event], metadata: dict[str, Any] | None) -> int:
        before = self.state
        before_last, after = fold(self, before, batch)
        when = self.event_store.clock.now()
        version = await self._append(batch, metadata=metadata, occurred_at=when)
        self._state = stamp(before_last, after, version, when)
        self._sequence_number = version
        self._since_snapshot += len(batch)
        if self.snapshot_config is not None:
            await self._maybe_snapshot()
        return version

    def event_handler(self, event: Event) -> None:
        """Returns nothing; folds `event` into ``state`` (the aggregate's own fold)."""
        self._state = self.apply_event(self.state, event)

    def get_snapshot_state(self) -> S:
        """Returns ``state``: aggregates snapshot their state value."""
        return self.state

    def on_snapshot(self, state: Any, sequence_number: int) -> None:
        """Returns nothing; makes the snapshot's `state` the current state."""
        self._state = cast(S, state)

    def _snapshot_type(self) -> type | None:
        return type(self.state)

    async def _replay_events(self, replay: Replay) -> None:
        if not replay.events:
            return
        before_last, after = fold(self, self.state, replay.events)
        self._state = stamp(before_last, after, replay.last_version, micros_to_datetime(replay.last_occurred_us))
        self._sequence_number = replay.last_version

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.persistence_id!r}, version={self._sequence_number}, state={self.state!r})"

    def _repr_html_(self) -> str:
        return _state_html(f"{type(self).__name__} {self.persistence_id}", self.state)


def _state_html(title: str, state: State) -> str:
    return fields_html(title, ((f.name, getattr(state, f.name)) for f in dataclasses.fields(state)))
