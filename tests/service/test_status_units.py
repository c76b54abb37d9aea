"""The status path's parts in one process, on a real SQLite job store: batched head reads, the
body cache, ETag matching, and the event stream generator driven by real store changes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import event

from service.bodies import Body, BodyCache, etag_matches, etag_of
from service.events import StreamSlots, job_events
from service.heads import HeadReader
from worker.store import JobStore

pytestmark = pytest.mark.timeout(120)


def _new(store: JobStore, job_id: str, tenant: str = "t") -> None:
    store.create(job_id=job_id, tenant=tenant, input={"format": "torchscript", "size": 1, "sha256": "0" * 64},
                 spec={"ratio": 0.5})


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield s
    s.dispose()


def _count_selects(store: JobStore) -> list[str]:
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    return seen


def test_concurrent_head_reads_share_one_query(store: JobStore) -> None:
    ids = [f"{i:032x}" for i in range(40)]
    for i, job_id in enumerate(ids):
        _new(store, job_id, tenant="even" if i % 2 == 0 else "odd")
    reader = HeadReader(store)
    selects = _count_selects(store)

    async def main() -> list:
        # 120 callers at once (each id thrice, plus unknown ids): they all queue before the
        # first read starts, so the first read takes them all.
        calls = [reader.get(job_id) for job_id in ids * 3] + [reader.get("f" * 32), reader.get("e" * 32)]
        return await asyncio.gather(*calls)

    heads = asyncio.run(main())
    assert len(selects) == 1, selects
    assert heads[-2:] == [None, None]
    for i, head in enumerate(heads[:-2]):
        assert head.tenant == ("even" if (i % 40) % 2 == 0 else "odd") and head.version == 1


def test_a_read_queued_during_a_read_waits_for_the_next_one(store: JobStore) -> None:
    """No caller is answered from a read that started before it asked (no stale answers)."""
    job_id = "a" * 32
    _new(store, job_id)
    claim = store.claim(job_id, worker="w", max_attempts=3, stale_after=60)
    reader = HeadReader(store)
    real_heads = store.heads
    started = asyncio.Event()

    async def main() -> tuple:
        loop = asyncio.get_running_loop()

        def slow_heads(ids):  # type: ignore[no-untyped-def]
            result = real_heads(ids)
            loop.call_soon_threadsafe(started.set)
            time.sleep(0.3)  # the read is in flight while the job changes and a caller asks
            return result

        store.heads = slow_heads  # type: ignore[method-assign]
        first = asyncio.ensure_future(reader.get(job_id))
        await started.wait()
        store.progress(job_id, claim.attempt, "check", 50.0, "checking")  # the job changes ...
        second = await reader.get(job_id)  # ... and only then this caller asks
        return await first, second

    first, second = asyncio.run(main())
    assert first.version == 2 and second.version == 3


def test_a_store_error_reaches_every_waiter(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    reader = HeadReader(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE prunekit_jobs")

    async def main() -> list:
        return await asyncio.gather(*(reader.get(f"{i:032x}") for i in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert len(results) == 5 and all(isinstance(r, Exception) for r in results), results
    store.dispose()


def test_etag_matching() -> None:
    tag = etag_of(7)
    assert tag.startswith('"') and tag.endswith('.7"')
    assert etag_matches(tag, tag)
    assert etag_matches(f'W/{tag}', tag)
    assert etag_matches(f'"x.1", {tag}', tag)
    assert etag_matches("*", tag)
    assert not etag_matches(etag_of(8), tag)
    assert not etag_matches(tag.replace(".7", ".70"), tag)
    assert not etag_matches("", tag) and not etag_matches(None, tag)


def test_body_cache_is_keyed_by_version_and_bounded() -> None:
    cache = BodyCache(max_bytes=100)
    cache.put("a", Body(1, "queued", b"x" * 40))
    cache.put("b", Body(1, "queued", b"y" * 40))
    assert cache.get("a", 1) is not None and cache.get("a", 2) is None  # a new version: re-render
    cache.put("c", Body(3, "running", b"z" * 40))  # over 100 bytes: the least recently used goes
    assert cache.get("b", 1) is None and cache.get("a", 1) is not None and cache.get("c", 3) is not None
    cache.put("huge", Body(1, "queued", b"h" * 101))  # never kept
    assert cache.get("huge", 1) is None
    cache.put("a", Body(2, "running", b"x" * 10))  # replaces, and counts bytes once
    assert cache.get("a", 1) is None and cache.get("a", 2) is not None and cache.get("c", 3) is not None


def _parse(chunks: list[bytes]) -> list[tuple[str, str | None, str]]:
    out = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":") and ": " in line)
        if "event" in fields:
            out.append((fields["event"], fields.get("id"), fields.get("data", "")))
        elif block.startswith(":"):
            out.append(("comment", None, block))
    return out


def _stream(store: JobStore, job_id: str, tenant: str = "t", **kw: float) -> tuple:
    reader = HeadReader(store)
    slots = StreamSlots(2)

    async def render(job_id: str, version: int):  # type: ignore[no-untyped-def]
        job = store.get(job_id)
        return None if job is None else Body(job.version or 0, job.status, json.dumps(
            {"status": job.status, "stage": job.progress_stage}).encode())

    gen = job_events(job_id=job_id, tenant=tenant, heads=reader, render=render, last_seen=kw.get("last_seen"),
                     interval=0.05, heartbeat=kw.get("heartbeat", 10.0), max_seconds=kw.get("max_seconds", 30.0),
                     slots=slots)
    return gen, slots


def test_event_stream_follows_store_changes_until_the_end(store: JobStore) -> None:
    job_id = "a" * 32
    _new(store, job_id)
    gen, slots = _stream(store, job_id)

    async def main() -> list[bytes]:
        chunks = []
        claim = None
        async for chunk in gen:
            chunks.append(chunk)
            assert slots.open == 1
            events = [e for e in _parse(chunks) if e[0] == "job"]
            if len(events) == 1 and claim is None:
                claim = store.claim(job_id, worker="w", max_attempts=3, stale_after=60)
            elif len(events) == 2:
                store.progress(job_id, claim.attempt, "check", 50.0, "checking")
            elif len(events) == 3:
                store.succeed(job_id, claim.attempt, result={}, artifacts=[])
        return chunks

    chunks = asyncio.run(main())
    assert chunks[0].startswith(b"retry: ")
    events = _parse(chunks)
    jobs = [e for e in events if e[0] == "job"]
    assert [json.loads(d)["status"] for _, _, d in jobs] == ["queued", "running", "running", "succeeded"]
    assert [json.loads(d)["stage"] for _, _, d in jobs][2] == "check"
    versions = [int(i) for _, i, _ in jobs]
    assert versions == sorted(set(versions))
    assert events[-1][0] == "end" and json.loads(events[-1][2])["status"] == "succeeded"
    assert slots.open == 0


def test_event_stream_resumes_ends_and_refuses_other_tenants(store: JobStore) -> None:
    job_id = "b" * 32
    _new(store, job_id)
    store.cancel(job_id)
    version = store.heads([job_id])[job_id].version

    async def collect(gen) -> list:  # type: ignore[no-untyped-def]
        return _parse([c async for c in gen])

    # Resuming after the last event seen: nothing repeated, just the end.
    events = asyncio.run(collect(_stream(store, job_id, last_seen=version)[0]))
    assert [e[0] for e in events] == ["end"]
    # Another tenant (the route answers 404 before; the stream checks again) and a deleted job.
    assert [e[0] for e in asyncio.run(collect(_stream(store, job_id, tenant="other")[0]))] == ["gone"]
    quiet = "c" * 32
    _new(store, quiet)
    events = asyncio.run(collect(_stream(store, quiet, heartbeat=0.1, max_seconds=0.5)[0]))
    kinds = [e[0] for e in events]
    assert kinds[0] == "job" and kinds[-1] == "timeout" and "comment" in kinds, kinds

    async def delete_midway() -> list:
        gen, _ = _stream(store, quiet, max_seconds=30)
        chunks = []
        async for chunk in gen:
            chunks.append(chunk)
            if len(chunks) == 2:
                store.delete_any(quiet)
        return _parse(chunks)

    assert [e[0] for e in asyncio.run(delete_midway())] == ["job", "gone"]


def test_stream_slots_refuse_past_the_limit() -> None:
    from service.errors import ApiError

    slots = StreamSlots(1)
    slots.check()
    slots.open = 1
    with pytest.raises(ApiError) as err:
        slots.check()
    assert err.value.status == 503 and err.value.code == "too_many_streams"
