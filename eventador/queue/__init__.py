"""The durable queue: messages leased to consumers, kept in the store's DuckDB catalog.

``manager`` is the front (``QueueManager``, ``Lease``, ``RetryPolicy``); ``engine`` runs
the queue's operations on DuckDB, one writer thread.
"""

from eventador.queue.manager import (
    DeadLetterHook,
    Lease,
    NackOutcome,
    QueueManager,
    RetryPolicy,
    UnknownMessage,
    decode_message,
    encode_message,
)

__all__ = [
    "DeadLetterHook",
    "Lease",
    "NackOutcome",
    "QueueManager",
    "RetryPolicy",
    "UnknownMessage",
    "decode_message",
    "encode_message",
]
