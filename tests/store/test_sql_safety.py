"""What SQL may do to a store: never change the store's own tables and views, read-only
openers and ``eventador sql`` only read the store, and every failure is one ``SqlError``."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import eventador as ev
from eventador import ProjectionRunner, SqlProjection
from eventador.cli.main import main
from tests.support.domain import Deposited, deposited, opened

EVENTS = 40


def fill(store: ev.EventStore, n: int = EVENTS) -> None:
    for i in range(n // 2):
        store.append(f"acc-{i}", [opened(f"acc-{i}"), deposited(str(i + 1), f"acc-{i}")])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of EVENTS events in several Parquet files (flush_every=8)."""
    path = tmp_path_factory.mktemp("built") / "store"
    with ev.open_store(path, flush_every=8, durability="none") as store:
        fill(store, EVENTS - 2)
        store.append("late", [opened("late"), deposited("1", "late")])
    return path


@pytest.fixture
def directory(built: Path, tmp_path: Path) -> Path:
    """A copy of the built store, for one test."""
    shutil.copytree(built, tmp_path / "store")
    return tmp_path / "store"


@pytest.fixture
def store(directory: Path) -> Iterator[ev.EventStore]:
    with ev.open_store(directory, flush_every=8) as opened_store:
        yield opened_store


def catalog_rows(store: ev.EventStore) -> list[tuple[object, ...]]:
    con = store.connect()
    try:
        return con.execute("SELECT name, first_position, last_position FROM files ORDER BY 2").fetchall()
    finally:
        con.close()


def count(store: ev.EventStore) -> int:
    return int(store.sql("SELECT count(*) FROM events").fetchall()[0][0])


# -- the store's own tables and views ---------------------------------------------------------

DAMAGING = [
    "DROP TABLE files",
    "DELETE FROM main.files WHERE first_position > 16",
    "DELETE FROM files",
    'delete from "FILES"',
    "TRUNCATE files",
    "UPDATE files SET last_position = 1",
    "INSERT INTO files VALUES ('x.parquet', 1, 1, 1, 1, now())",
    "ALTER TABLE files RENAME TO old_files",
    "ALTER TABLE snapshots ADD COLUMN x INTEGER",
    "CREATE OR REPLACE TABLE files AS SELECT 1 AS name",
    "CREATE INDEX files_by_rows ON files (rows)",
    "COPY files FROM 'elsewhere.csv'",
    "WITH gone AS (SELECT name FROM files) DELETE FROM files WHERE name IN (SELECT name FROM gone)",
    "EXPLAIN ANALYZE DELETE FROM files",
    "SELECT 1; DROP TABLE files",
    "/* hidden */ DROP -- really\n TABLE catalog.main.files",
    "DROP SCHEMA main CASCADE",
    "DELETE FROM projection_checkpoints",
    "DELETE FROM queue_messages",
    "DROP TABLE live_views",
    "PREPARE wipe AS DELETE FROM files",
    "IMPORT DATABASE 'somewhere'",
    "CREATE MACRO hex(x) AS 'not hex'",
    "MERGE INTO files USING (SELECT 'x' AS name) AS n ON files.name = n.name WHEN MATCHED THEN DELETE",
    "INSERT OR REPLACE INTO files SELECT * FROM files",
    "SET GLOBAL enable_external_access = false",
    "SET allowed_directories = ['/nowhere/']",
    "CREATE OR REPLACE MACRO Json_Object(a, b) AS a",
]


def test_sql_cannot_change_the_store_s_own_tables(directory: Path) -> None:
    store = ev.open_store(directory, flush_every=8)
    before = catalog_rows(store)
    assert len(before) >= 2
    escaped = []
    for reader in (store, store.as_of(10)):
        for statement in DAMAGING:
            try:
                reader.sql(statement)
            except ev.SqlError as exc:
                if "refused" not in str(exc):
                    escaped.append(f"{reader!r} {statement}: {exc}")
            else:
                escaped.append(f"{reader!r} {statement}: ran")
    assert not escaped, escaped
    assert catalog_rows(store) == before
    store.close()
    # Today DROP TABLE files (or a DELETE) made the next open delete the data files.
    with ev.open_store(directory) as reopened:
        assert count(reopened) == EVENTS
        assert len(list(reopened.read_all())) == EVENTS


STORE_VIEWS = [
    "DROP VIEW events",
    "CREATE OR REPLACE TEMP VIEW events AS SELECT 1 AS position",
    "ALTER VIEW events RENAME TO old_events",
    'DROP VIEW "test.Deposited"',
    'CREATE TABLE "test.Opened" (x INTEGER)',
    "DROP VIEW big",
    "DROP VIEW sums",
    "CREATE OR REPLACE VIEW sums AS SELECT 1",
    "DROP SCHEMA sums__v1 CASCADE",
]


def test_sql_cannot_drop_or_replace_the_store_s_views(store: ev.EventStore) -> None:
    store.create_view("big", 'SELECT * FROM "test.Deposited" WHERE amount > 5')
    ProjectionRunner(store, [SqlProjection(
        "sums", setup_sql="CREATE TABLE sums (n BIGINT)", apply_sql="INSERT INTO sums SELECT count(*) FROM new_events",
    )]).run_until_caught_up()
    for statement in STORE_VIEWS:
        with pytest.raises(ev.SqlError, match="refused"):
            store.sql(statement)
    # The session goes on: the views still answer (today DROP VIEW events broke it).
    assert count(store) == EVENTS
    assert store.sql('SELECT count(*) FROM "test.Deposited"').fetchall() == [(EVENTS // 2,)]
    assert store.sql("SELECT count(*) FROM big").fetchall()[0][0] > 0
    assert store.sql("SELECT sum(n) FROM sums").fetchall() == [(EVENTS,)]


def test_a_writable_store_s_sql_makes_the_user_s_own_tables_and_reads_the_user_s_files(
    store: ev.EventStore, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.csv"
    mine.write_text("account_id,limit\nacc-1,100\n")
    store.sql(f"CREATE TABLE limits AS SELECT * FROM read_csv('{mine}')")
    store.sql("INSERT INTO limits VALUES ('acc-2', 200)")
    store.sql("CREATE VIEW rich AS SELECT account_id FROM limits WHERE \"limit\" > 150")
    assert store.sql("SELECT * FROM rich").fetchall() == [("acc-2",)]
    assert store.sql(
        'SELECT count(*) FROM "test.Deposited" d JOIN limits l USING (account_id)'
    ).fetchall() == [(2,)]
    store.sql(f"COPY (SELECT * FROM limits) TO '{tmp_path / 'out.csv'}'")
    assert (tmp_path / "out.csv").exists()
    store.sql("DROP VIEW rich")
    store.sql("DROP TABLE limits")
    # The store's tables are there to read.
    assert store.sql("SELECT count(*) FROM files").fetchall()[0][0] >= 2


# -- read-only openers and eventador sql ------------------------------------------------------


READ_ONLY_REFUSES = [
    "SELECT * FROM read_csv('{outside}')",
    "SELECT * FROM read_parquet('{outside_dir}/*.parquet')",
    "COPY (SELECT * FROM events) TO '{outside_dir}/copy.csv'",
    "COPY (SELECT * FROM events) TO '{data}/copy.parquet'",
    "ATTACH '{outside_dir}/other.duckdb' AS other",
    "CREATE TABLE scratch AS SELECT * FROM events",
    "DROP VIEW events",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "EXPORT DATABASE '{outside_dir}/dump'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{data}/copy.csv'",
]


def test_a_read_only_opener_s_sql_only_reads_the_store(directory: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with ev.open_store(directory, read_only=True) as reader:
        for statement in READ_ONLY_REFUSES:
            query = statement.format(outside=outside, outside_dir=tmp_path, data=directory / "data")
            with pytest.raises(ev.SqlError):
                reader.sql(query).fetchall()
        assert count(reader) == EVENTS
        assert reader.as_of(10).sql("SELECT count(*) FROM events").fetchall() == [(10,)]
        with pytest.raises(ev.SqlError, match="Permission"):
            reader.as_of(10).sql(f"SELECT * FROM read_csv('{outside}')").fetchall()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.csv", "store"]
    assert not list((directory / "data").glob("copy*"))


def test_a_read_only_opener_with_allow_external_reads_and_writes_other_files(
    directory: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "limits.csv"
    outside.write_text("account_id,cap\nacc-1,100\n")
    with ev.open_store(directory, read_only=True, allow_external=True) as reader:
        assert reader.sql(
            f"SELECT count(*) FROM \"test.Deposited\" JOIN read_csv('{outside}') USING (account_id)"
        ).fetchall() == [(1,)]
        reader.sql(f"COPY (SELECT * FROM events) TO '{tmp_path / 'all.csv'}'")
        reader.sql("CREATE TABLE scratch AS SELECT * FROM events")
        assert reader.sql("SELECT count(*) FROM scratch").fetchall() == [(EVENTS,)]
        with pytest.raises(ev.SqlError, match="refused"):
            reader.sql("DROP VIEW events")
    assert (tmp_path / "all.csv").exists()


def test_eventador_sql_reads_only_the_store_unless_allowed(
    directory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.csv"
    copy = f"COPY (SELECT * FROM events) TO '{target}'"
    assert main(["sql", str(directory), copy]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "--allow-external" in err and "Traceback" not in err
    assert not target.exists()
    assert main(["sql", str(directory), f"SELECT * FROM read_csv('{directory / 'manifest.json'}')"]) == 1
    assert "Permission" in capsys.readouterr().err
    assert main(["sql", str(directory), copy, "--allow-external"]) == 0
    assert target.exists()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("SELECT 'a'::INT", "Conversion"),
        ("", "empty"),
        ("  -- nothing\n", "empty"),
        ("SELEC 1", "Parser"),
        ("SELECT nope FROM events", "Binder"),
    ],
)
def test_eventador_sql_prints_one_error_for_a_bad_query(
    directory: Path, capsys: pytest.CaptureFixture[str], query: str, says: str
) -> None:
    assert main(["sql", str(directory), query]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eventador: error: SQL error") and says in err and "Traceback" not in err


# -- one error for every failure ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fetch"),
    [
        ("SELECT 'a'::INT", "fetchall"),
        ("SELECT 'a'::INT", "df"),
        ("SELECT 'a'::INT", "arrow"),
        ("SELECT CAST(stream_id AS INTEGER) FROM events", "fetchall"),
        ("SELECT 1/0::INT AS x FROM range(3) WHERE error('stop') IS NULL", "df"),
        ("SELECT nope FROM events", None),
        ("SELEC 1", None),
        ("", None),
        ("SELECT * FROM no_such_table", None),
    ],
)
def test_every_sql_failure_is_one_error_also_caught_as_duckdb_error(
    store: ev.EventStore, query: str, fetch: str | None
) -> None:
    for reader in (store, store.as_of(5)):
        with pytest.raises(ev.SqlError) as caught:
            relation = reader.sql(query)
            if fetch is not None:
                result = getattr(relation, fetch)()
                if fetch == "arrow":
                    result.read_all()
        error = caught.value
        assert isinstance(error, duckdb.Error)
        assert isinstance(error, ev.EventadorError) and isinstance(error, ev.InvalidInputError)
        assert str(error).startswith("SQL error")
    with pytest.raises(duckdb.Error):  # code written against DuckDB keeps working
        store.sql("SELECT 'a'::INT").fetchall()


def test_the_relation_keeps_duckdb_s_api(store: ev.EventStore) -> None:
    relation = store.sql('SELECT stream_id, amount FROM "test.Deposited" ORDER BY stream_id')
    assert relation.columns == ["stream_id", "amount"]
    assert len(relation.df()) == EVENTS // 2
    assert relation.arrow().read_all().num_rows == EVENTS // 2
    big = store.sql('SELECT count(*) FROM "test.Deposited" WHERE amount > 10').fetchall()
    assert relation.filter("amount > 10").aggregate("count(*)").fetchall() == big
    assert relation.limit(1).fetchall() == [("acc-0", 1)]
    assert len(relation) == EVENTS // 2
    with pytest.raises(ev.SqlError):
        relation.filter("amount > 'x'").fetchall()
    assert duckdb.sql("SELECT count(*) FROM relation").fetchall() == [(EVENTS // 2,)]


# -- event types named like the store's own tables and views ------------------------------------


def test_event_types_named_events_or_files_neither_shadow_nor_are_shadowed(tmp_path: Path) -> None:
    registry = ev.TypeRegistry()

    class Events(ev.Event, _register=False):  # in this test's registry only, not the process's
        n: int

    class Files(ev.Event, _register=False):
        name: str

    for cls, name in ((Events, "events"), (Files, "files")):
        cls.event_type = name
        registry.register(cls, name)
    with ev.open_store(tmp_path / "s", registry=registry, flush_every=2) as store:
        store.append("a", [Events(n=1), Files(name="x.csv"), Files(name="y.csv")])
        store.flush()
        with pytest.warns(UserWarning) as told:
            assert store.sql("SELECT count(*) FROM events").fetchall() == [(3,)]
        said = " ".join(str(w.message) for w in told)
        assert "'event_files'" in said and "'event_events'" in said
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            assert store.sql("SELECT name FROM event_files ORDER BY 1").fetchall() == [("x.csv",), ("y.csv",)]
            assert store.sql("SELECT n FROM event_events").fetchall() == [(1,)]
            # `files` is still the store's catalog, not the events of type files.
            assert store.sql("SELECT count(*) FROM files").fetchall() == [(1,)]
            assert store.sql("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'files' "
                             "AND column_name = 'first_position'").fetchall() == [(1,)]
            # A projection over them runs (its connection's `files` and checkpoints are the store's).
            ProjectionRunner(store, [SqlProjection(
                "names", setup_sql="CREATE TABLE names (name VARCHAR)",
                apply_sql="INSERT INTO names SELECT data->>'name' FROM new_events WHERE event_type = 'files'",
            )]).run_until_caught_up()
            assert store.sql("SELECT count(*) FROM names").fetchall() == [(2,)]
    with ev.open_store(tmp_path / "s", registry=registry) as reopened:
        assert len(list(reopened.read_all())) == 3


def test_the_user_s_sql_cannot_take_a_typed_view_s_name(store: ev.EventStore) -> None:
    with pytest.raises(ev.SqlError, match=r"typed view of event type 'test\.Deposited'"):
        store.sql('CREATE TABLE "test.deposited" (x INTEGER)')
    assert store.sql('SELECT count(*) FROM "test.Deposited"').fetchall() == [(EVENTS // 2,)]


def test_sql_over_a_memory_store_is_checked_too() -> None:
    with ev.open_store(None) as store:
        store.append("a", [deposited("1", "a")])
        with pytest.raises(ev.SqlError, match="refused"):
            store.sql("DROP TABLE files")
        store.sql("CREATE TABLE mine AS SELECT * FROM events")
        assert store.sql("SELECT count(*) FROM mine").fetchall() == [(1,)]
        assert [r.event for r in store.read_all()] == [deposited("1", "a")]


def test_events_in_the_hot_tier_and_in_files_are_both_in_a_restricted_reader_s_views(directory: Path) -> None:
    writer = ev.open_store(directory, flush_every=1000)
    writer.append("late", [deposited("2", "late")])  # only in the log
    with ev.open_store(directory, read_only=True) as reader:
        assert reader.sql("SELECT count(*) FROM events WHERE stream_id = 'late'").fetchall() == [(3,)]
        assert reader.sql('SELECT sum(amount) FROM "test.Deposited"').fetchall()[0][0] > 0
        assert Deposited.event_type in reader.info()["event_types"]
    writer.close()


def test_a_projection_s_sql_cannot_change_the_store_s_tables_either() -> None:
    for setup, apply in [
        ("CREATE TABLE t (n BIGINT)", "DELETE FROM files"),
        ("DROP TABLE files; CREATE TABLE t (n BIGINT)", "INSERT INTO t SELECT count(*) FROM new_events"),
        ("CREATE TABLE t (n BIGINT)", "DROP VIEW events"),
        ("CREATE OR REPLACE TABLE main.files AS SELECT 1 AS name", "SELECT 1"),
    ]:
        with pytest.raises(ev.ProjectionError, match="refused"):
            SqlProjection("p", setup_sql=setup, apply_sql=apply)
