"""What sagas and the coordinator share: the queues, the envelopes on them, the events both hear.

A saga writes its commands and timeouts to the queues as ``SagaEnvelope`` dicts; the
coordinator reads them, delivers them, and hands the outcome back to the saga as a
``Delivery``. Neither side imports the other's internals: both import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict, cast

from eventador.codec import encode_value
from eventador.messages import Event
from eventador.queue.engine import Enqueue

__all__ = [
    "COMMANDS_QUEUE",
    "EVENTS_QUEUE",
    "TIMEOUTS_QUEUE",
    "Delivery",
    "SagaCommandFailed",
    "SagaEnvelope",
    "SagaTimeout",
    "as_envelope",
    "enqueue_envelope",
    "make_envelope",
    "short_type",
]

COMMANDS_QUEUE = "eventador.saga.commands"
"""Commands sagas send, waiting for the coordinator to deliver them."""
EVENTS_QUEUE = "eventador.saga.events"
"""Events for sagas that must not be lost: failures of their commands (dead letters)."""
TIMEOUTS_QUEUE = "eventador.saga.timeouts"
"""Saga timeouts: delayed messages, delivered when due."""


class SagaTimeout(Event, event_type="SagaTimeout"):
    """A timeout the saga scheduled is due; reaches the saga through ``handle_saga_event``."""

    timeout_id: str


class SagaCommandFailed(Event, event_type="SagaCommandFailed"):
    """A command the saga sent could not be carried out: its target rejected it, or it was
    retried until it went to the dead letters (`reason` says why). Reaches the saga
    through ``handle_saga_event``, so it is never left waiting."""

    target: str
    command_type: str
    reason: str
    attempts: int
    dedupe_key: str
    rejected: bool = False


class SagaEnvelope(TypedDict):
    """A queued message for a saga or from one: a plain dict on the queue (cheap to encode).

    `kind`: "command" (to `target`), "event" or "timeout" (to the saga). `message_type`
    and `payload` are the inner message as ``encode_message`` stores it.
    """

    kind: str
    saga_id: str
    saga_type: str
    target: str
    message_type: str
    payload: bytes
    dedupe_key: str
    timeout_id: str


def make_envelope(
    kind: str,
    saga_id: str,
    saga_type: str,
    *,
    target: str = "",
    message_type: str = "",
    payload: bytes = b"",
    dedupe_key: str = "",
    timeout_id: str = "",
) -> SagaEnvelope:
    """Returns a saga envelope (unused fields empty: every envelope has the same keys)."""
    return {
        "kind": kind,
        "saga_id": saga_id,
        "saga_type": saga_type,
        "target": target,
        "message_type": message_type,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "timeout_id": timeout_id,
    }


def as_envelope(message: Any) -> SagaEnvelope | None:
    """Returns `message` as a saga envelope, or None when it is not one."""
    if isinstance(message, dict) and isinstance(message.get("kind"), str) and "saga_id" in message:
        return cast(SagaEnvelope, message)
    return None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the coordinator asks a saga to handle (never queued, never stored)."""

    kind: str  # "reply", "event" or "timeout"
    cause: str  # "c<id>", "e<id>", "t<id>": the queue message, for dedupe
    events: tuple[Event, ...]
    target: str = ""
    dedupe_key: str = ""
    ack: int | None = None  # the queue message to ack with the unit's own queue work


def enqueue_envelope(
    queue: str, message: SagaEnvelope, key: str | None, delay_us: int, *, fresh: bool = False
) -> Enqueue:
    """Returns the queue work that puts `message` on `queue` (deduplicated by `key`, after `delay_us`)."""
    body = encode_value(message, what="saga envelope")
    return Enqueue(queue, [(None, body, key or None, delay_us)], fresh=fresh)


def short_type(message_type: str) -> str:
    """Returns the name a queue's message type gives its message: the event type, or the class's qualname."""
    if message_type.startswith(("event:", "event@")):
        return message_type.partition(":")[2]
    return message_type.rsplit(":", 1)[-1]
