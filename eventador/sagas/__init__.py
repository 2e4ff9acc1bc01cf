"""Sagas: long-running workflows with compensation and durable timeouts.

``saga`` holds the ``Saga`` actor and the events it records; ``coordinator`` delivers
its commands from the durable queue and hands the replies back.
"""

from eventador.sagas.coordinator import SagaCoordinator, SagaFactory, list_sagas
from eventador.sagas.saga import (
    COMMANDS_QUEUE,
    EVENTS_QUEUE,
    TIMEOUTS_QUEUE,
    Saga,
    SagaCommandFailed,
    SagaState,
    SagaStatus,
    SagaTimeout,
)

__all__ = [
    "COMMANDS_QUEUE",
    "EVENTS_QUEUE",
    "TIMEOUTS_QUEUE",
    "Saga",
    "SagaCommandFailed",
    "SagaCoordinator",
    "SagaFactory",
    "SagaState",
    "SagaStatus",
    "SagaTimeout",
    "list_sagas",
]
