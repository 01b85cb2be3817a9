"""The asynchronous store API: awaitable methods over the synchronous store.

Each call runs the synchronous method in a thread pool owned by this process, so awaiting
it never blocks the running event loop and no event loop is ever created per call. The pool
is re-created after a fork (Gunicorn workers, also with preload_app).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from typing import TypeVar

from .store import SyncStore

T = TypeVar("T")
_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def _current_executor() -> ThreadPoolExecutor:
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        with _executor_lock:
            if _executor is None or _executor_pid != os.getpid():
                _executor = ThreadPoolExecutor(thread_name_prefix="store")
                _executor_pid = os.getpid()
    return _executor


class AsyncStore:
    """Awaitable twin of SyncStore; same methods, same results."""

    def __init__(self, sync_store: SyncStore) -> None:
        self.sync = sync_store
        self.name = sync_store.name

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_current_executor(), partial(method, *args, **kwargs))

    async def get(self, record_id: int) -> dict | None:
        return await self._call(self.sync.get, record_id)

    async def list(
        self, *, limit: int, after: int = 0, filters: dict[str, Any] | None = None
    ) -> tuple[list[dict], int | None]:
        return await self._call(self.sync.list, limit=limit, after=after, filters=filters)

    async def create(self, record: dict) -> dict:
        return await self._call(self.sync.create, record)

    async def replace(self, record_id: int, record: dict) -> dict | None:
        return await self._call(self.sync.replace, record_id, record)

    async def update(self, record_id: int, changes: dict) -> dict | None:
        return await self._call(self.sync.update, record_id, changes)

    async def delete(self, record_id: int) -> bool:
        return await self._call(self.sync.delete, record_id)

    async def ping(self) -> None:
        await self._call(self.sync.ping)
