"""kill -9 of a bucketer process mid-batch, then a restart: every message stored exactly once."""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from scheduler.domain.status import Status
from scheduler.testing.processes import free_port

from .support import CLOCK, Stack, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 3_000


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def _stop(process: subprocess.Popen[bytes], sig: int) -> int:
    process.send_signal(sig)
    return process.wait(60)


def test_kill_9_mid_batch_then_restart_loses_and_duplicates_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    log_path = str(tmp_path / "bucketer.log")
    now = CLOCK.now_ms()
    requests = [stack.request(now + 3_600_000 + (i % 50) * 1_000) for i in range(N)]
    stack.produce_requests(requests)

    first = stack.bucketer_process(log_path, batch_size=50)
    try:
        wait_until(lambda: len(stack.stored_ids()) >= N // 5, 120, f"{N // 5} stored rows")
        assert first.poll() is None, Path(log_path).read_text()
        assert _stop(first, signal.SIGKILL) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    at_kill = len(stack.stored_ids())
    assert at_kill < N, "the first process finished before the kill: the test proves nothing"

    port = free_port()
    second = stack.bucketer_process(log_path, batch_size=500, metrics_port=port)
    try:
        wait_until(lambda: len(stack.stored_ids()) >= N, 120, f"{N} stored rows")
        wait_until(stack.committed_everything, 60, "offsets committed")
        # The entry point serves its metrics: this process stored what the first one had not.
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        stored = _sample(metrics.decode(), "scheduler_bucketer_stored_total")
        assert N - at_kill <= stored <= N
        assert _stop(second, signal.SIGTERM) == 0, Path(log_path).read_text()  # graceful exit
    finally:
        if second.poll() is None:
            second.kill()

    stored = Counter(stack.stored_ids())
    assert len(stored) == N and set(stored.values()) == {1}
    assert set(stored) == {r.message_id for r in requests}
    messages = stack.messages
    for request in requests[:: N // 100]:  # a sample of the records and their logs
        view = messages.get(request.app_id, request.message_id)
        assert view is not None and view.state.status is Status.READY
        assert len(messages.logs(request.app_id, request.message_id)) == 1
