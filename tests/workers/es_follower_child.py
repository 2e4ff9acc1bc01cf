"""The eventsourcing process application that tests/ext/test_eventsourcing_crash.py kills.

    python tests/workers/es_follower_child.py DIR SEED

A leader application (``Ledger``) records entries; a follower (``Audit``, a
``ProcessApplication``) processes each of the leader's notifications once, recording
an ``Audited`` event that names the leader's notification id. Both persist into
eventador under DIR (fsync'd). The loop: the leader records one or a few entries, the
follower pulls and processes what is new; after each step one line goes to stdout.
Its tracking record and its events are one log frame, so a SIGKILL at any moment
leaves the follower's events and its tracking position in agreement.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import ProcessApplication

AUDIT_ID = uuid5(NAMESPACE_URL, "/audit")


class Entry(Aggregate):
    @event("Recorded")
    def __init__(self, amount: int) -> None:
        self.amount = amount


class Ledger(Application[UUID]):
    def record(self, amount: int) -> None:
        self.save(Entry(amount))


class AuditTrail(Aggregate):
    @staticmethod
    def create_id() -> UUID:
        return AUDIT_ID

    @event("Opened")
    def __init__(self) -> None:
        self.seen: list[int] = []

    @event("Audited")
    def audit(self, notification_id: int) -> None:
        self.seen.append(notification_id)


class Audit(ProcessApplication[UUID]):
    @singledispatchmethod
    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        try:
            trail: AuditTrail = self.repository.get(AUDIT_ID)
        except AggregateNotFoundError:
            trail = AuditTrail()
        assert processing_event.tracking is not None
        trail.audit(processing_event.tracking.notification_id)
        processing_event.collect_events(trail)


def environment(directory: str) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventador.ext.eventsourcing",
        "EVENTADOR_PATH": directory,
        "EVENTADOR_DURABILITY": "fsync",
    }


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    env = environment(directory)
    ledger, audit = Ledger(env=env), Audit(env=env)
    audit.follow(ledger.name, ledger.notification_log)
    print("READY", flush=True)
    while True:
        for _ in range(rng.randint(1, 3)):
            ledger.record(rng.randint(1, 100))
        audit.pull_and_process(ledger.name)
        print(audit.recorder.max_tracking_id(ledger.name), flush=True)
        if rng.random() < 0.1:
            os.sched_yield()


if __name__ == "__main__":
    # The classes must have importable topics (not __main__'s), so that the test reads them.
    from tests.workers import es_follower_child

    es_follower_child.main()
