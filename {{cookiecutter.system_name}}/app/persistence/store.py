"""The synchronous store: CRUD over one table, what Flask handlers call directly.

All work is synchronous (both drivers are), so there is no event loop on this path; the
asynchronous API in aio.py is a thin facade over this class.
"""

from __future__ import annotations

import hashlib
import json
from types import ModuleType
from typing import Any

from ..field_types import unchanged
from ..settings import StoreSettings
from .database import Database
from .errors import IdempotencyKeyReused
from .sql import make_table
from .sql import utc_now


class SyncStore:
    """One store's records in one application's database: create, read, list, replace,
    update and delete. create_app() makes one per store for each application it builds."""

    def __init__(
        self,
        name: str,
        database: Database,
        settings: StoreSettings,
        hooks: ModuleType | None = None,
    ) -> None:
        self.name = name
        self._before_write = getattr(hooks, "before_write", unchanged)
        self._table = make_table(settings.table, settings.fields, database.dialect)
        database.register(self._table)
        self._database = database
        self.fields = settings.fields  # None: a store of JSON documents
        fields = settings.fields or {}
        self.defaults: dict[str, Any] = {
            name: spec["default"] for name, spec in fields.items() if "default" in spec
        }
        self.field_types: dict[str, str] = {name: spec["type"] for name, spec in fields.items()}
        # Fields that list() can filter on by equality, with their types.
        self.filterable: dict[str, str] = self._table.filterable

    def _timestamp(self) -> Any:
        return self._table.dialect.write_timestamp(utc_now())

    def get(self, record_id: int) -> dict | None:
        database, table = self._database, self._table

        def work(cursor) -> dict | None:
            cursor.execute(table.get_sql, (record_id,))
            return table.fetch_record(cursor)

        return database.run(work)

    def list(
        self, *, limit: int, after: int = 0, filters: dict[str, Any] | None = None
    ) -> tuple[list[dict], int | None]:
        """Up to limit records with id > after, in id order, and the cursor of the next page."""
        database, table = self._database, self._table
        filters = filters or {}
        columns = list(filters)
        sql = table.list_sql(columns)
        params = [after, *table.params(filters, columns), limit + 1]

        def work(cursor) -> list[dict]:
            cursor.execute(sql, params)
            return [table.to_record(row) for row in cursor.fetchall()]

        records = database.run(work)
        if len(records) > limit:
            return records[:limit], records[limit - 1]["id"]
        return records, None

    def _insert_params(self, record: dict) -> list:
        """A new record's values, after defaults and the before_write hook, and timestamps."""
        now = self._timestamp()
        return [*self._table.row_values(self._before_write({**self.defaults, **record})), now, now]

    def create(self, record: dict) -> dict:
        database, table = self._database, self._table
        params = self._insert_params(record)

        def work(cursor) -> dict:
            cursor.execute(table.insert_sql, params)
            return table.to_record(cursor.fetchone())

        return database.run(work, writes=True)

    def create_once(self, record: dict, idempotency_key: str) -> tuple[dict, bool]:
        """Create the record unless idempotency_key already created one: (record, replayed).

        A retry of a POST whose answer was lost finds the record its first attempt made. The
        key is kept with the record, with a fingerprint of the request body: a key reused for
        a different body raises IdempotencyKeyReused.
        """
        database, table = self._database, self._table
        fingerprint = hashlib.sha256(
            json.dumps(record, sort_keys=True, default=str).encode()
        ).hexdigest()
        params = [*self._insert_params(record), idempotency_key, fingerprint]

        def work(cursor) -> tuple[dict, bool]:
            cursor.execute(table.insert_once_sql, params)
            row = cursor.fetchone()
            if row is not None:
                return table.to_record(row), False
            cursor.execute(table.find_by_key_sql, (idempotency_key,))
            row = cursor.fetchone()
            if row is None:  # deleted since: the key no longer names a record
                raise IdempotencyKeyReused("the record this key created was deleted")
            *values, stored = row
            if stored != fingerprint:
                raise IdempotencyKeyReused("the key was used with a different request body")
            return table.to_record(tuple(values)), True

        return database.run(work, writes=True)

    def replace(self, record_id: int, record: dict) -> dict | None:
        """PUT: the record becomes exactly what is given (defaults for what is left out)."""
        full = self._table.replacement(record, self.defaults)
        return self._write(record_id, self._before_write(full), merge=False)

    def update(self, record_id: int, changes: dict) -> dict | None:
        """PATCH: only the given fields change."""
        return self._write(record_id, self._before_write(changes), merge=True)

    def _write(self, record_id: int, values: dict, *, merge: bool) -> dict | None:
        table = self._table
        now = self._timestamp()
        return self._database.run(
            lambda cursor: table.update(cursor, record_id, values, now, merge),
            writes=True,
            transaction=table.update_reads_first(merge),
        )

    def delete(self, record_id: int) -> bool:
        database, table = self._database, self._table

        def work(cursor) -> bool:
            cursor.execute(table.delete_sql, (record_id,))
            return cursor.rowcount > 0

        return database.run(work, writes=True)

    def ping(self) -> None:
        """Raise a StorageError unless the database answers and the table has every column
        the code uses (a database behind the code is not ready); on the database's probe
        connections, so that it never waits behind requests."""
        database, table = self._database, self._table
        database.run(lambda cursor: cursor.execute(table.exists_sql), probe=True)
