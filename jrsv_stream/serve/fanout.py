"""Per-stream fan-out state of the caption server (:mod:`jrsv_stream.serve.server`): the
bounded :class:`SubscriberQueue` of each subscriber (drops superseded partials, activity and
stats first, never finals) and the :class:`_Hub` the server keeps per stream id."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from websockets.asyncio.server import ServerConnection

from jrsv_stream.audio.sources import AudioSource
from jrsv_stream.stream.events import Activity, Event, Partial, Stats, is_droppable
from jrsv_stream.stream.session import StreamSession
from jrsv_stream.stream.session_state import Chunk, _Timings


class SubscriberQueue:
    """Bounded, never-blocking outgoing queue of one subscriber (event-loop thread only).

    Items are events or control-message strings. Policy on :meth:`put`:

    - a partial supersedes a queued partial of the same segment; activity and stats
      supersede queued ones (the older item is dropped and counted);
    - at ``maxsize`` the oldest queued partial is dropped to make room; if none is queued,
      a partial newcomer is dropped, while the newest activity and stats are queued anyway
      (at most one of each is ever queued, so a stalled subscriber still learns what it
      lost); a non-droppable one (final, error, control) is queued anyway up to
      ``hard_limit``, where :meth:`put` returns False: the caller must disconnect the
      subscriber (so no final is ever dropped for a connected one).

    Attributes:
        dropped_partials: partials this subscriber lost.
        dropped_other: activity/stats events it lost.
    """

    def __init__(self, maxsize: int = 256, hard_limit: int = 4096):
        self.maxsize, self.hard_limit = maxsize, hard_limit
        self._q: collections.deque = collections.deque()
        self._wake: asyncio.Event | None = None
        self.dropped_partials = 0
        self.dropped_other = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._q)

    def _count(self, item) -> None:
        if isinstance(item, Partial):
            self.dropped_partials += 1
        else:
            self.dropped_other += 1

    def _supersedes(self, new, old) -> bool:
        if isinstance(new, Partial):
            return isinstance(old, Partial) and old.segment_id == new.segment_id
        return isinstance(new, (Activity, Stats)) and type(old) is type(new)

    def put(self, item: Event | str) -> bool:
        if self.closed:
            return True
        droppable = not isinstance(item, str) and is_droppable(item)
        if droppable:
            for old in [o for o in self._q if not isinstance(o, str) and self._supersedes(item, o)]:
                self._q.remove(old)
                self._count(old)
        if len(self._q) >= self.maxsize:
            victim = next((o for o in self._q if isinstance(o, Partial)), None)
            if victim is not None:
                self._q.remove(victim)
                self._count(victim)
            elif isinstance(item, Partial):
                self._count(item)
                return True
            # activity/stats are queued anyway: supersession above keeps at most one of each
            elif not droppable and len(self._q) >= self.hard_limit:
                self.closed = True
                return False
        self._q.append(item)
        if self._wake is not None:
            self._wake.set()
        return True

    async def get(self) -> Event | str:
        if self._wake is None:
            self._wake = asyncio.Event()
        while not self._q:
            self._wake.clear()
            await self._wake.wait()
        return self._q.popleft()


class _Hub:
    """Everything the server keeps about one stream id."""

    def __init__(self, stream_id: str, chunk_queue: int):
        self.stream_id = stream_id
        self.subscribers: dict[ServerConnection, SubscriberQueue] = {}
        self.publisher: Any = None  # the publishing connection, or a local source's name
        self.session: StreamSession | None = None
        self.chunks: asyncio.Queue[Chunk | None] = asyncio.Queue(chunk_queue)
        self.proc_task: asyncio.Task | None = None
        self.finishing: asyncio.Future | None = None
        self.source: AudioSource | None = None  # a local source feeding the stream, if any
        self.timings = _Timings()
        self.audio_s_total = 0.0
        self.finals = 0  # finals dispatched in the current stream run (sent in "stream ended")
        self.model_errors = 0  # consecutive failed chunks
        self.failed: str | None = None  # why the current stream run failed, if it did
        self.stalled: asyncio.Future | None = None  # a chunk decode that overran step_timeout_s
