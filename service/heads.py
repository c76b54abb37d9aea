"""Batched reads of job heads (owner, status, version): the one store query of the status path.

Every ``GET /v1/jobs/{id}`` and every open event stream needs to know whether a job changed.
The job store is synchronous (SQLAlchemy), so each read costs a hop to a worker thread and a
pooled connection, and under load most of a request's time went there.  :class:`HeadReader`
lets concurrent callers share that cost: a caller queues its id; if no read is running one
starts, taking every id queued so far into one ``SELECT ... WHERE id IN (...)`` in one thread.
Callers that queue while a read runs wait for the *next* read, never the running one, so every
answer reflects the store as it was after the caller asked (no stale reads, whatever the load).
With one caller at a time it is one thread hop per read, as before.
"""

from __future__ import annotations

import asyncio

import anyio

from worker.store import Head, JobStore

MAX_BATCH = 500  # ids per query (SQLite binds at most 32766 parameters; stay far below)


class HeadReader:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._pending: dict[str, list[asyncio.Future[Head | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, job_id: str) -> Head | None:
        """The job's head, or None if there is no such job."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Head | None] = loop.create_future()
        self._pending.setdefault(job_id, []).append(fut)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        batch: dict[str, list[asyncio.Future[Head | None]]] = {}
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                ids = list(batch)
                heads = {}
                error: Exception | None = None
                for start in range(0, len(ids), MAX_BATCH):
                    try:
                        heads.update(await anyio.to_thread.run_sync(self.store.heads, ids[start:start + MAX_BATCH]))
                    except Exception as exc:  # the store is down: every waiter hears it
                        error = exc
                        break
                for job_id, futures in batch.items():
                    for fut in futures:
                        if fut.done():  # its request was cancelled (the client went away)
                            continue
                        if error is not None:
                            fut.set_exception(error)
                        else:
                            fut.set_result(heads.get(job_id))
                batch = {}
        except BaseException:  # cancelled mid-read (the loop is closing): nobody may wait for ever
            for futures in (*batch.values(), *self._pending.values()):
                for fut in futures:
                    if not fut.done():
                        fut.cancel()
            self._pending = {}
            raise
        finally:
            self._task = None
