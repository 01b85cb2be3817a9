"""Each store's synchronous and asynchronous APIs, against the test database."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from app import create_app
from app.persistence import NoApplication
from app.persistence import QueryTimeout
from helpers import SAMPLES
from helpers import STORES
from helpers import migrated
from helpers import same_values


def _stores(name: str):
    sync = importlib.import_module(f"app.stores.{name}_sync").store
    asynchronous = importlib.import_module(f"app.stores.{name}").store
    return sync, asynchronous


@pytest.mark.parametrize("name", STORES)
def test_sync_store_round_trip(app, name):
    store, _ = _stores(name)
    first = SAMPLES[name][0]
    created = store.create(first)
    assert same_values(first, created)
    assert store.get(created["id"]) == created
    items, _ = store.list(limit=10)
    assert created in items
    assert store.delete(created["id"]) is True
    assert store.get(created["id"]) is None


@pytest.mark.parametrize("name", STORES)
def test_async_store_works_inside_a_running_loop(app, name):
    _, store = _stores(name)
    samples = SAMPLES[name]

    async def scenario():
        loop = asyncio.get_running_loop()
        created = await asyncio.gather(*(store.create(record) for record in samples))
        assert asyncio.get_running_loop() is loop
        fetched = await asyncio.gather(*(store.get(record["id"]) for record in created))
        assert fetched == created
        ids = [record["id"] for record in created]
        assert await store.delete(ids[0]) is True
        items, _ = await store.list(limit=100)
        return ids, [item["id"] for item in items]

    ids, listed = asyncio.run(scenario())
    assert listed == sorted(ids[1:])


@pytest.mark.parametrize("name", STORES)
def test_async_store_creates_no_event_loop_per_call(app, name, monkeypatch):
    _, store = _stores(name)

    async def scenario():
        created = await store.create(SAMPLES[name][0])
        return await store.get(created["id"])

    loop = asyncio.new_event_loop()

    def no_new_loops(*args, **kwargs):
        raise AssertionError("an event loop was created by a store call")

    monkeypatch.setattr(asyncio, "new_event_loop", no_new_loops)
    try:
        fetched = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert fetched is not None


def test_statement_past_the_timeout_is_aborted(environ):
    """A statement running past DB_STATEMENT_TIMEOUT_MS stops with QueryTimeout (a 504), on
    SQLite as on PostgreSQL, and the next statement on the same connection runs normally."""
    app = migrated(create_app(environ={**environ, "DB_STATEMENT_TIMEOUT_MS": "200"}))
    database = app.extensions["database"]
    # Seconds of work on either database, far past the timeout, yet bounded.
    slow = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000000) "
        "SELECT count(*) FROM n"
    )

    def select_one(cursor) -> tuple:
        cursor.execute("SELECT 1")
        return cursor.fetchone()

    try:
        with pytest.raises(QueryTimeout):
            database.run(lambda cursor: cursor.execute(slow))
        for _ in range(3):  # the deadline is per statement, not per connection
            assert database.run(select_one) == (1,)
    finally:
        database.close()


@pytest.mark.parametrize("name", STORES)
def test_each_app_owns_its_database(app, environ, tmp_path, name):
    """create_app() can be called twice in one process: two apps on two databases never see
    each other's records, and the store modules resolve to the app whose context is current."""
    other_environ = {**environ, "DATA_DIR": str(tmp_path / "other")}
    other_environ.pop("DATABASE_URL", None)  # the second app on SQLite, in its own directory
    other = migrated(create_app(environ=other_environ))
    store, _ = _stores(name)
    first, second = SAMPLES[name][0], SAMPLES[name][1]
    try:
        mine = store.create(first)  # the fixture's app context is current
        with other.app_context():
            assert store.list(limit=10) == ([], None)
            theirs = store.create(second)
            assert store.list(limit=10) == ([theirs], None)
        assert store.list(limit=10) == ([mine], None)
        assert same_values(first, mine) and same_values(second, theirs)
        assert other.extensions["database"] is not app.extensions["database"]
    finally:
        other.extensions["database"].close()


def test_a_store_outside_an_application_says_so():
    store, _ = _stores(STORES[0])
    with pytest.raises(NoApplication, match="app_context"):
        store.get(1)
