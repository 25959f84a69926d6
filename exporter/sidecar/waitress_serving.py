"""Waitress served from a thread, guarded against slow clients: the sidecar's HTTP listeners.

The OTLP/HTTP receiver (``otlp_http``) and the webhook listener (``webhook_listener``) share
this stack: waitress reads requests with non-blocking I/O on one thread and hands complete ones
to worker threads. Two guards keep a few slow clients from denying the listener:

- a read deadline: a request must arrive whole within ``read_timeout_seconds`` of its first
  byte, or its connection is closed (checked every second);
- at the connection limit, the connection stalled longest (idle, or sending under
  ``_MIN_READ_RATE`` bytes/s for over ``_EVICT_AFTER_SECONDS``) is closed so a new client can
  be accepted. A connection with a complete request in hand is never closed.

``stop()`` stops accepting, lets the requests already read finish until its deadline, then
closes every connection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Self

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

_EVICT_AFTER_SECONDS = 1.0
_MIN_READ_RATE = 16 << 10  # bytes/s: any real client on a network sends faster


class GuardedChannel(HTTPChannel):
    """Records when the request being read began (``reading_since``, monotonic; None when no
    request is partly read) and its bytes so far, for the read deadline and for eviction at
    the connection limit. Subclasses set ``error_task_class``."""

    reading_since: float | None = None
    reading_bytes = 0

    def received(self, data: bytes) -> bool:
        before = self.request
        result = super().received(data)
        if self.request is None:
            self.reading_since = None
        elif self.request is not before or self.reading_since is None:
            self.reading_since = time.monotonic()  # a new request began in this data
            self.reading_bytes = len(data)
        else:
            self.reading_bytes += len(data)
        return bool(result)

    def stalled_since(self, now: float) -> float | None:
        """Since when this connection has held a slot without a complete request to work on
        and without data arriving at a useful rate: idle keep-alive silent for over
        ``_EVICT_AFTER_SECONDS``, or a request arriving for that long at under
        ``_MIN_READ_RATE`` bytes/s. None otherwise (a request in hand is never evicted)."""
        if self.requests or self.total_outbufs_len or self.will_close:
            return None
        since = self.reading_since
        if since is None:
            since = now - (time.time() - self.last_activity)  # idle since its last byte
        elif self.reading_bytes > _MIN_READ_RATE * (now - since):
            return None  # still arriving at a useful rate
        return since if since < now - _EVICT_AFTER_SECONDS else None


class _GuardedServer:
    """What the guards add to waitress's server (mixed into the instance's class)."""

    read_timeout_seconds: float = 10.0
    _map: dict[int, Any]
    adj: Any

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[misc]
        cutoff = time.monotonic() - self.read_timeout_seconds
        for channel in list(self._map.values()):
            since = getattr(channel, "reading_since", None)
            if since is not None and since < cutoff and not channel.requests:
                channel.will_close = True  # closed by the I/O loop on its next pass

    def readable(self) -> bool:
        if len(self._map) >= self.adj.connection_limit:
            self._evict_one()
        return bool(super().readable())  # type: ignore[misc]

    def _evict_one(self) -> None:
        """Close the connection stalled longest (see ``GuardedChannel.stalled_since``), if
        any, so the next client can be accepted."""
        now = time.monotonic()
        victim, oldest = None, now
        for channel in self._map.values():
            if isinstance(channel, GuardedChannel):
                since = channel.stalled_since(now)
                if since is not None and since < oldest:
                    victim, oldest = channel, since
        if victim is not None:
            victim.will_close = True


class WaitressServing:
    """A guarded waitress server bound in the constructor (OSError when the address is taken;
    port 0 picks a free one), served by ``start()`` from a daemon thread named
    ``thread_name``. ``server_options`` go to waitress's ``create_server``."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        thread_name: str,
        channel_class: type[GuardedChannel],
        threads: int,
        connection_limit: int,
        idle_timeout_seconds: int,
        read_timeout_seconds: float,
        **server_options: Any,
    ) -> None:
        self._map: dict[int, Any] = {}
        self._thread_name = thread_name
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # we count and shed
        server = create_server(
            app,
            map=self._map,
            host=host,
            port=port,
            threads=max(1, threads),
            connection_limit=max(1, connection_limit),
            channel_timeout=idle_timeout_seconds,
            cleanup_interval=1,  # the read deadline's resolution
            asyncore_use_poll=True,
            ident="codebook",
            expose_tracebacks=False,
            **server_options,
        )
        assert isinstance(server, BaseWSGIServer)
        server.__class__ = type("CodebookWSGIServer", (_GuardedServer, type(server)), {})
        server.read_timeout_seconds = read_timeout_seconds  # type: ignore[attr-defined]
        server.channel_class = channel_class
        self._server = server
        bound = server.getsockname()
        self.host = str(bound[0])
        self.port = int(bound[1])
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._drain_seconds = 5.0
        self._thread: threading.Thread | None = None

    def _pending(self) -> int:
        """Complete requests waiting for a worker."""
        return len(getattr(self._server.task_dispatcher, "queue", ()))

    def start(self) -> Self:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=0.2, map=self._map, use_poll=True, count=1)
            self._server.accepting = False
            self._server.del_channel()
            if self._server.socket is not None:
                self._server.socket.close()
            deadline = time.monotonic() + self._drain_seconds
            while time.monotonic() < deadline and self._busy():
                wasyncore.loop(timeout=0.05, map=self._map, use_poll=True, count=1)
        finally:
            for channel in list(self._map.values()):
                with contextlib.suppress(OSError):
                    channel.close()
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            self._done.set()

    def _busy(self) -> bool:
        dispatcher = self._server.task_dispatcher
        if getattr(dispatcher, "queue", None) or getattr(dispatcher, "active_count", 0):
            return True
        return any(
            getattr(ch, "total_outbufs_len", 0) or getattr(ch, "requests", None)
            for ch in self._map.values()
            if isinstance(ch, HTTPChannel)
        )

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop accepting, drain for up to ``timeout_seconds``, close; idempotent."""
        self._drain_seconds = timeout_seconds
        self._stopping.set()
        if self._thread is None:
            self._server.close()
            return
        self._done.wait(timeout_seconds + 2)
