"""eventsourcing applications on eventador: what its own test cases do not check (our
mapping of versions, one store per directory, reopening), and what eventador adds (SQL
over the events with their state as columns, the application as of a past time)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pytest
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.system import MultiThreadedRunner, ProcessApplication, SingleThreadedRunner, System

from eventador.codec import encode_event
from eventador.errors import SerializationError
from eventador.ext.eventsourcing import (
    EventadorApplicationRecorder,
    EventadorFactory,
    EventadorProcessRecorder,
    StoredEventRecord,
    as_of,
    create_topic_views,
    store_of,
)

MODULE = "eventador.ext.eventsourcing"


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str, difficulty: int, fee: Decimal) -> None:
        self.tricks.append(trick)


class DogSchool(Application[UUID]):
    def register_dog(self, name: str) -> UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def add_trick(self, dog_id: UUID, trick: str, difficulty: int = 1, fee: Decimal = Decimal("9.50")) -> None:
        dog: Dog = self.repository.get(dog_id)
        dog.add_trick(trick, difficulty, fee)
        self.save(dog)


@pytest.fixture(params=["memory", "disk"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "memory":
        return {"PERSISTENCE_MODULE": MODULE}
    return {"PERSISTENCE_MODULE": MODULE, "EVENTADOR_PATH": str(tmp_path)}


@pytest.fixture
def school(env: dict[str, str]) -> Iterator[DogSchool]:
    app = DogSchool(env=env)
    yield app
    app.close()


def stored(originator_id: UUID | str, version: int, topic: str = "t") -> StoredEvent:
    return StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=b"{}")


# -- our mapping of eventsourcing's versions onto streams ---------------------------------


def test_an_originator_may_begin_at_any_version(school: DogSchool) -> None:
    recorder = school.recorder
    originator = uuid4()
    assert recorder.insert_events([stored(originator, 5), stored(originator, 6)]) == [1, 2]
    recorder.insert_events([stored(originator, 7)])
    assert [e.originator_version for e in recorder.select_events(originator, gt=5, lte=6)] == [6]
    assert [e.originator_version for e in recorder.select_events(originator, desc=True, limit=2)] == [7, 6]
    assert recorder.select_events(originator, lte=4) == []
    assert store_of(school).stream_version(str(originator)) == 3


def test_a_gap_in_versions_raises_integrity_error_and_writes_nothing(school: DogSchool) -> None:
    recorder = school.recorder
    originator, other = uuid4(), uuid4()
    recorder.insert_events([stored(originator, 1)])
    with pytest.raises(IntegrityError, match="gap"):
        recorder.insert_events([stored(other, 1), stored(originator, 3)])
    with pytest.raises(IntegrityError, match="follows"):
        recorder.insert_events([stored(other, 1), stored(other, 3)])
    with pytest.raises(IntegrityError, match="before its first"):
        recorder.insert_events([stored(originator, 0)])
    assert recorder.max_notification_id() == 1
    assert recorder.select_events(other) == []


def test_one_insert_may_come_back_to_an_originator(school: DogSchool) -> None:
    a, b = uuid4(), uuid4()
    ids = school.recorder.insert_events([stored(a, 1), stored(b, 1), stored(a, 2)])
    assert ids == [1, 2, 3]
    assert [e.originator_version for e in school.recorder.select_events(a)] == [1, 2]


def test_inserted_events_are_stored_as_the_codec_encodes_them(tmp_path: Path) -> None:
    """insert_events encodes its records from their fields, never making them: the
    bytes stored, in the hot tier and in the log read back, are encode_event's."""
    env = {"PERSISTENCE_MODULE": MODULE, "EVENTADOR_PATH": str(tmp_path)}
    a, b = uuid4(), uuid4()
    batches = [
        [StoredEvent(originator_id=a, originator_version=v, topic=f"t{v % 3}", state=bytes(v)) for v in range(50)],
        [stored(b, 1), stored(a, 50), stored(b, 2)],  # several originators: event by event
        [stored(str(b), 3), stored(str(b), 4)],  # equal ids, not the same object
        [stored(uuid4(), 1, topic="é" * 30)],
    ]
    expected = [
        encode_event(StoredEventRecord(topic=s.topic, originator_version=s.originator_version, state=s.state))
        for batch in batches
        for s in batch
    ]
    query = "SELECT payload FROM events ORDER BY position"
    with DogSchool(env=env) as app:
        for batch in batches:
            app.recorder.insert_events(batch)
        assert [p for (p,) in store_of(app).sql(query).fetchall()] == expected
    with DogSchool(env=env) as app:
        assert [p for (p,) in store_of(app).sql(query).fetchall()] == expected


def test_a_bad_field_of_a_stored_event_is_named_and_nothing_is_written(school: DogSchool) -> None:
    originator = uuid4()
    bad = StoredEvent(originator_id=originator, originator_version=2, topic="t", state="{}")  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match=r"StoredEventRecord\.state"):
        school.recorder.insert_events([stored(originator, 1), bad, stored(originator, 3)])
    assert school.recorder.max_notification_id() is None


def test_text_originator_ids_read_back_as_text(env: dict[str, str]) -> None:
    app = Application[str](env={**env, "ORIGINATOR_ID_TYPE": "text"})
    try:
        app.recorder.insert_events([stored("order-1", 1)])
        assert app.recorder.select_notifications(None, 1)[0].originator_id == "order-1"
    finally:
        app.close()


def test_a_bad_setting_names_itself() -> None:
    with pytest.raises(ValueError, match="EVENTADOR_DURABILITY"):
        EventadorFactory({"EVENTADOR_DURABILITY": "sometimes"})
    with pytest.raises(ValueError, match="ORIGINATOR_ID_TYPE"):
        EventadorFactory({"ORIGINATOR_ID_TYPE": "int"})


# -- stores: one per application directory, kept across restarts ------------------------------


def test_applications_of_one_directory_share_its_store(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": MODULE, "EVENTADOR_PATH": str(tmp_path)}
    first, second = DogSchool(env=env), DogSchool(env=env)
    assert store_of(first) is store_of(second)
    assert (tmp_path / "DogSchool").is_dir()
    dog_id = first.register_dog("Fido")
    first.close()
    second.add_trick(dog_id, "roll over")  # the store stays open for the other
    assert second.repository.get(dog_id).tricks == ["roll over"]
    second.close()
    assert store_of(second).closed


def test_events_tracking_and_snapshots_survive_a_restart(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": MODULE, "EVENTADOR_PATH": str(tmp_path), "IS_SNAPSHOTTING_ENABLED": "y"}
    with DogSchool(env=env) as app:
        dog_id = app.register_dog("Fido")
        app.add_trick(dog_id, "roll over")
        app.take_snapshot(dog_id)
        app.add_trick(dog_id, "play dead")
        recorder = app.factory.process_recorder()
        recorder.insert_events([stored(uuid4(), 1)], tracking=Tracking("Upstream", 7))
    with DogSchool(env=env) as app:
        assert app.repository.get(dog_id).tricks == ["roll over", "play dead"]
        assert app.snapshots is not None
        assert [s.originator_version for s in app.snapshots.get(dog_id)] == [2]
        assert app.factory.process_recorder().max_tracking_id("Upstream") == 7
        assert [n.id for n in app.notification_log.select(start=1, limit=10)] == [1, 2, 3, 4]


def test_tracking_and_events_are_written_together_or_not_at_all(school: DogSchool) -> None:
    recorder = school.factory.process_recorder()
    assert isinstance(recorder, EventadorProcessRecorder)
    recorder.insert_events([stored(uuid4(), 1)], tracking=Tracking("Upstream", 1))
    taken = uuid4()
    recorder.insert_events([stored(taken, 1)])
    with pytest.raises(IntegrityError):  # the event conflicts: the tracking record is not kept either
        recorder.insert_events([stored(taken, 1)], tracking=Tracking("Upstream", 2))
    assert recorder.max_tracking_id("Upstream") == 1
    with pytest.raises(IntegrityError):  # the tracking record conflicts: the event is not kept either
        recorder.insert_events([stored(uuid4(), 1)], tracking=Tracking("Upstream", 1))
    assert recorder.max_notification_id() == 2


def test_notifications_filtered_by_topic_span_more_than_one_read(school: DogSchool) -> None:
    recorder = school.recorder
    assert isinstance(recorder, EventadorApplicationRecorder)
    recorder.insert_events([stored(uuid4(), 1, "common") for _ in range(250)])
    recorder.insert_events([stored(uuid4(), 1, "rare")])
    found = recorder.select_notifications(None, 5, topics=["rare"])
    assert [n.id for n in found] == [251]


# -- beyond the peer: SQL over the events, the application in the past ------------------------


def test_topic_views_give_the_state_as_typed_columns(school: DogSchool) -> None:
    fido = school.register_dog("Fido")
    school.add_trick(fido, "roll over", 2, Decimal("12.25"))
    school.add_trick(fido, "play dead", 5, Decimal("30"))
    views = create_topic_views(school)
    assert views == {"Dog_Registered": f"{__name__}:Dog.Registered", "Dog_TrickAdded": f"{__name__}:Dog.TrickAdded"}
    store = store_of(school)
    rows = store.sql(
        "SELECT originator_id, originator_version, trick, difficulty, fee, timestamp "
        "FROM Dog_TrickAdded ORDER BY position"
    ).fetchall()
    assert [r[:5] for r in rows] == [
        (fido, 2, "roll over", 2, Decimal("12.25")),
        (fido, 3, "play dead", 5, Decimal("30")),
    ]
    assert all(isinstance(r[5], datetime) and r[5].tzinfo is not None for r in rows)
    assert store.sql("SELECT sum(fee) FROM Dog_TrickAdded").fetchall() == [(Decimal("42.25"),)]
    school.register_dog("Fído 🐕")  # eventsourcing writes UTF-8 JSON: SQL reads it as text, not escaped bytes
    assert store.sql("SELECT name FROM Dog_Registered ORDER BY position").fetchall() == [("Fido",), ("Fído 🐕",)]


def test_topic_views_refuse_state_that_is_not_plain_json(env: dict[str, str]) -> None:
    app = DogSchool(env={**env, "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"})
    try:
        app.register_dog("Fido")
        with pytest.raises(ValueError, match="not stored as plain JSON"):
            create_topic_views(app)
    finally:
        app.close()


def test_store_of_an_application_elsewhere_says_where_it_is() -> None:
    with pytest.raises(ValueError, match=r"PERSISTENCE_MODULE=eventador\.ext\.eventsourcing"):
        store_of(DogSchool(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}))


def test_the_application_as_of_a_past_time(school: DogSchool) -> None:
    fido = school.register_dog("Fido")
    school.add_trick(fido, "roll over")
    time.sleep(0.002)
    between = datetime.now(UTC)
    time.sleep(0.002)
    school.add_trick(fido, "play dead")
    rex = school.register_dog("Rex")

    then = as_of(school, between)
    assert then.repository.get(fido).tricks == ["roll over"]
    with pytest.raises(AggregateNotFoundError):
        then.repository.get(rex)
    assert as_of(school, 1).get(fido).tricks == []  # by notification id
    assert school.repository.get(fido).tricks == ["roll over", "play dead"]  # today's is untouched
    create_topic_views(school)
    assert then.sql("SELECT count(*) FROM Dog_TrickAdded").fetchall() == [(1,)]


def test_snapshots_take_no_notification_ids(env: dict[str, str]) -> None:
    with DogSchool(env={**env, "IS_SNAPSHOTTING_ENABLED": "y"}) as app:
        dog_id = app.register_dog("Fido")
        app.take_snapshot(dog_id)
        app.add_trick(dog_id, "sit")
        assert [n.id for n in app.notification_log.select(start=1, limit=10)] == [1, 2]
        assert app.recorder.max_notification_id() == 2




# -- a process application following its leader -------------------------------------------------


class TrickCount(Aggregate):
    @staticmethod
    def create_id(trick: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/tricks/{trick}")

    @event("Counted")
    def __init__(self, trick: str) -> None:
        self.trick = trick
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


class TrickCounters(ProcessApplication[UUID]):
    @singledispatchmethod
    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        """Other events: nothing to do."""

    @policy.register
    def _(self, domain_event: Dog.TrickAdded, processing_event: ProcessingEvent[UUID]) -> None:
        try:
            counter: TrickCount = self.repository.get(TrickCount.create_id(domain_event.trick))
        except AggregateNotFoundError:
            counter = TrickCount(domain_event.trick)
        counter.increment()
        processing_event.collect_events(counter)

    def count(self, trick: str) -> int:
        try:
            counter: TrickCount = self.repository.get(TrickCount.create_id(trick))
        except AggregateNotFoundError:
            return 0
        return counter.count


@pytest.mark.parametrize("runner_class", [SingleThreadedRunner, MultiThreadedRunner])
def test_a_process_application_follows_its_leader_across_restarts(
    runner_class: type[SingleThreadedRunner[UUID]], tmp_path: Path
) -> None:
    env = {"PERSISTENCE_MODULE": MODULE, "EVENTADOR_PATH": str(tmp_path)}
    system = System(pipes=[[DogSchool, TrickCounters]])
    runner = runner_class(system, env=env)
    runner.start()
    school, counters = runner.get(DogSchool), runner.get(TrickCounters)
    fido = school.register_dog("Fido")
    for trick in ["sit", "sit", "roll over"]:
        school.add_trick(fido, trick)
    counters.recorder.wait(school.name, school.recorder.max_notification_id(), timeout=10)
    assert (counters.count("sit"), counters.count("roll over")) == (2, 1)
    runner.stop()

    runner = runner_class(system, env=env)  # again, on the same directories: nothing processed twice
    runner.start()
    school, counters = runner.get(DogSchool), runner.get(TrickCounters)
    school.add_trick(fido, "sit")
    counters.recorder.wait(school.name, school.recorder.max_notification_id(), timeout=10)
    assert (counters.count("sit"), counters.count("roll over")) == (3, 1)
    tracked = counters.recorder.max_tracking_id(school.name)
    assert tracked == school.recorder.max_notification_id() == 5
    runner.stop()
