"""The persistent forward queue (``forward.queue_dir``): survives ``kill -9``, never replays
garbage, stays bounded; and the queue module's own contract, table-driven."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_upstream import GrpcUpstream
from sidecar_proc import SidecarProcess, wait_for
from test_forward_accounting import _free_port, _post, _request, balanced, ledger

from exporter.sidecar.queue import DB_NAME, DiskQueue, MemoryQueue, QueueError

N_REQUESTS = 20
SPANS_PER_REQUEST = 5


def _config(port: int, queue_dir: Path) -> dict[str, object]:
    return {
        "forward": {
            "endpoint": f"127.0.0.1:{port}",
            "queue_dir": str(queue_dir),
            "timeout_seconds": 0.5,
            "initial_backoff_seconds": 0.05,
            "max_backoff_seconds": 0.2,
            "max_elapsed_seconds": 600,
        }
    }


def _names(i: int) -> list[str]:
    return [f"req{i}-span{j}" for j in range(SPANS_PER_REQUEST)]


def _fill_then_kill(
    tmp_path: Path, port: int, queue_dir: Path, sig: signal.Signals = signal.SIGKILL
) -> SidecarProcess:
    """Upstream down: accept every request into the disk queue, then stop the sidecar."""
    sidecar = SidecarProcess(tmp_path, {**_config(port, queue_dir), "shutdown_timeout_seconds": 1})
    with sidecar:
        for i in range(N_REQUESTS):
            assert _post(sidecar, _request(_names(i))) == 200
        led = ledger(sidecar)
        assert led["queued"] == N_REQUESTS * SPANS_PER_REQUEST and balanced(led)
        assert sidecar.proc is not None
        sidecar.proc.send_signal(sig)
        assert sidecar.proc.wait(10) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    return sidecar


def _received_names(upstream: GrpcUpstream) -> list[str]:
    return [
        span.name
        for req in list(upstream.requests)
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_stop_then_restart_delivers_every_span(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    queue_dir = tmp_path / "queue"
    first = _fill_then_kill(tmp_path, port, queue_dir, sig)
    if sig == signal.SIGTERM:
        assert "20 request(s) left in the persistent forward queue" in first.log()
    sent = {n for i in range(N_REQUESTS) for n in _names(i)}
    upstream = GrpcUpstream(port=port)
    try:
        with SidecarProcess(tmp_path, _config(port, queue_dir)) as sidecar:
            wait_for(lambda: ledger(sidecar)["queued"] == 0, timeout=30)
            got = _received_names(upstream)
            assert set(got) == sent  # all N, nothing else
            duplicates = len(got) - len(sent)
            redelivered = sidecar.value("codebook_forward_redelivered_total", signal="traces")
            # At-least-once: duplicates only from what was in flight (the head request), and
            # counted as possible duplicates.
            assert 0 <= duplicates <= redelivered <= SPANS_PER_REQUEST
            assert sidecar.value("codebook_telemetry_received_total", signal="traces",
                                 transport="replay") == len(sent)
            led = ledger(sidecar)
            assert balanced(led) and led["forwarded"] == len(sent) and led["dropped"] == 0
            assert "replaying 20 request(s) (100 item(s))" in sidecar.log()
        # Delivered entries are gone: a third start replays nothing.
        with SidecarProcess(tmp_path, _config(port, queue_dir)) as sidecar:
            assert ledger(sidecar)["queued"] == 0
    finally:
        upstream.close()


@pytest.mark.slow
def test_torn_wal_write_is_skipped_never_replayed_as_garbage(tmp_path: Path) -> None:
    """Cut the WAL mid-frame after kill -9 (a torn last write): SQLite's frame checksums end
    recovery before it; the intact requests are delivered whole, the torn one not at all."""
    port = _free_port()
    queue_dir = tmp_path / "queue"
    _fill_then_kill(tmp_path, port, queue_dir)
    wal = queue_dir / f"{DB_NAME}-wal"
    assert wal.stat().st_size > 4096
    with wal.open("r+b") as f:
        f.truncate(wal.stat().st_size - 100)
    upstream = GrpcUpstream(port=port)
    try:
        with SidecarProcess(tmp_path, _config(port, queue_dir)) as sidecar:
            wait_for(lambda: ledger(sidecar)["queued"] == 0, timeout=30)
            got = _received_names(upstream)
            intact = {n for i in range(N_REQUESTS - 1) for n in _names(i)}
            assert set(got) == intact  # every request but the torn last one, each one whole
            assert balanced(ledger(sidecar))
    finally:
        upstream.close()


@pytest.mark.slow
def test_corrupt_entry_is_counted_not_sent(tmp_path: Path) -> None:
    port = _free_port()
    queue_dir = tmp_path / "queue"
    _fill_then_kill(tmp_path, port, queue_dir)
    db = sqlite3.connect(queue_dir / DB_NAME)
    (rid, body) = db.execute("SELECT id, body FROM queue ORDER BY id LIMIT 1 OFFSET 3").fetchone()
    flipped = bytes([body[0] ^ 0xFF]) + body[1:]
    db.execute("UPDATE queue SET body = ? WHERE id = ?", (flipped, rid))
    db.commit()
    db.close()
    upstream = GrpcUpstream(port=port)
    try:
        with SidecarProcess(tmp_path, _config(port, queue_dir)) as sidecar:
            wait_for(lambda: ledger(sidecar)["queued"] == 0, timeout=30)
            got = set(_received_names(upstream))
            assert got == {n for i in range(N_REQUESTS) if i != 3 for n in _names(i)}
            assert sidecar.value("codebook_telemetry_dropped_total", signal="traces",
                                 reason="corrupt") == SPANS_PER_REQUEST
            assert balanced(ledger(sidecar))
            assert "failed their checksum" in sidecar.log()
    finally:
        upstream.close()


def test_unusable_queue_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sidecar = SidecarProcess(tmp_path, {"forward": {"endpoint": "127.0.0.1:4317",
                                                    "queue_dir": str(blocker / "sub")}})
    with pytest.raises(AssertionError, match="cannot open the forward queue"):
        sidecar.start()


# -- the queue module -----------------------------------------------------------------------


def _make(kind: str, path: Path, requests: int = 4, nbytes: int = 100) -> MemoryQueue:
    if kind == "memory":
        return MemoryQueue(requests, nbytes)
    return DiskQueue(path, requests, nbytes)


KINDS = [pytest.param("memory", id="memory"), pytest.param("disk", id="disk")]


@pytest.mark.parametrize("kind", KINDS)
def test_queue_is_fifo_and_bounded_by_requests_and_bytes(kind: str, tmp_path: Path) -> None:
    q = _make(kind, tmp_path)
    a = q.put("traces", b"a" * 40, 2)
    b = q.put("logs", b"b" * 40, 1)
    assert a is not None and b is not None
    assert q.put("traces", b"c" * 30, 1) is None  # 110 > 100 bytes
    assert q.stats() == (2, 80)
    assert q.fraction() == pytest.approx(0.8)
    head = q.head()
    assert head is not None and (head.id, head.body, head.items) == (a.id, b"a" * 40, 2)
    assert q.remove(head) and not q.remove(head)
    head = q.head()
    assert head is not None and (head.signal, head.body) == ("logs", b"b" * 40)
    assert q.put("traces", b"c" * 30, 1) is not None
    assert q.put("traces", b"d", 1) is not None and q.put("traces", b"e", 1) is not None
    assert q.put("traces", b"f", 1) is None  # 4 requests
    q.close()


def test_disk_queue_replays_in_order_oldest_in_flight(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, 10, 1 << 20)
    for i in range(4):
        assert q.put("traces", bytes([i]) * 10, i + 1) is not None
    head = q.head()
    assert head is not None and q.remove(head)  # delivered: gone for good
    q.close()
    again = DiskQueue(tmp_path, 10, 1 << 20)
    assert [e.items for e in again.replayed.entries] == [2, 3, 4]
    assert again.replayed.in_flight is again.replayed.entries[0]
    assert again.replayed.corrupt == []
    head = again.head()
    assert head is not None and head.body == bytes([1]) * 10
    assert again.take_all() == []  # a persistent queue keeps its entries on shutdown
    assert again.stats() == (3, 30)
    again.close()


def test_disk_queue_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(QueueError, match=str(tmp_path / "f")):
        DiskQueue(tmp_path / "f" / "q", 1, 1024)


def test_disk_queue_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        q = DiskQueue(tmp_path / "q", 1, 1024)
        q.put("traces", ExportTraceServiceRequest().SerializeToString() or b"x", 1)
        assert (tmp_path / "q" / DB_NAME).stat().st_mode & 0o077 == 0
        q.close()
    finally:
        os.umask(old)


def test_one_process_per_queue_dir(tmp_path: Path) -> None:
    """A second opener (another replica on a shared volume) is refused, not replaying twice."""
    first = DiskQueue(tmp_path, 4, 1024)
    with pytest.raises(QueueError, match="in use by another codebook process"):
        DiskQueue(tmp_path, 4, 1024)
    first.close()
    DiskQueue(tmp_path, 4, 1024).close()


def test_check_config_does_not_touch_the_queue(tmp_path: Path) -> None:
    """--check-config validates without opening (or locking) the persistent queue."""
    import subprocess
    import sys

    import yaml

    queue_dir = tmp_path / "queue"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"forward": {"endpoint": "127.0.0.1:4317",
                                                  "queue_dir": str(queue_dir)}}))
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"queue_dir: {queue_dir}" in proc.stdout
    assert "ready_max_queue_fraction: 0.9" in proc.stdout
    assert not queue_dir.exists()
