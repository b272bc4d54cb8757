"""CPU seconds and resident memory of named processes, from /proc, per phase of the suite.

A sampler thread reads /proc/<pid>/stat and /proc/<pid>/status every SAMPLE_S; a phase is a
window: CPU seconds used between its start and end (a restarted process is followed by name)
and the peak RSS seen during it (sampled, so a spike shorter than SAMPLE_S can be missed).
Every sample is also kept as each name's CPU seconds so far, against the wall clock, so the CPU
of any window can be read afterwards (`cpu_between`): a scenario knows its steady window (the
instants when messages both arrive and come due at its rate) only from its own ledger.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.clock import SystemClock

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 0.5
CLOCK = SystemClock()

Pids = Callable[[], dict[str, int]]
"""Who to watch now: name -> pid (called at every sample, so restarts are followed)."""


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def child_pids(pid: int) -> list[tuple[int, str]]:
    """The direct children of `pid` with a short name: `resource-tracker` (multiprocessing's)
    or `child` (e.g. the dispatcher's record writer process)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = []
    for child in map(int, text.split()):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        found.append((child, "resource-tracker" if b"resource_tracker" in cmdline else "child"))
    return found


def stack_pids(state_dir: Path) -> dict[str, int]:
    """Kafka and Cassandra of the local stack, from its pid files (absent: not watched)."""
    out = {}
    for name in ("kafka", "cassandra"):
        try:
            out[name] = int((state_dir / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
    return out


@dataclass
class Usage:
    cpu_s: float = 0.0
    peak_rss: int = 0


@dataclass
class _Phase:
    wall_s: float = 0.0
    usage: dict[str, Usage] = field(default_factory=dict)


class Sampler:
    def __init__(self, pids: Pids) -> None:
        self._pids = pids
        self._lock = threading.Lock()
        self._last_cpu: dict[tuple[str, int], float] = {}
        self._open: dict[str, _Phase] = {}
        self.phases: dict[str, dict[str, object]] = {}
        self._totals: dict[str, float] = {}  # name -> CPU seconds since the sampler started
        self._series: list[tuple[int, dict[str, float]]] = []  # (wall clock ms, totals then)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resources", daemon=True)

    def start(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @contextmanager
    def phase(self, name: str, monotonic: Callable[[], float]) -> Iterator[None]:
        self._sample()
        started = monotonic()
        with self._lock:
            self._open[name] = _Phase()
        try:
            yield
        finally:
            self._sample()
            with self._lock:
                done = self._open.pop(name)
            done.wall_s = monotonic() - started
            self.phases[name] = {
                "wall_s": round(done.wall_s, 1),
                "processes": {
                    proc: {
                        "cpu_s": round(u.cpu_s, 2),
                        "cores": round(u.cpu_s / done.wall_s, 2) if done.wall_s else 0.0,
                        "peak_rss_mib": round(u.peak_rss / 2**20, 1),
                    }
                    for proc, u in sorted(done.usage.items())
                },
            }

    def cpu_between(self, start_ms: int, end_ms: int) -> dict[str, float]:
        """CPU seconds of each name between two wall-clock instants (epoch ms), interpolated
        between the samples around them; empty when the samples do not cover the window."""
        with self._lock:
            series = list(self._series)
        if not series or start_ms < series[0][0] or end_ms > series[-1][0] or end_ms <= start_ms:
            return {}
        a, b = _totals_at(series, start_ms), _totals_at(series, end_ms)
        return {name: round(b[name] - a.get(name, 0.0), 3) for name in b}

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self._pids().items():
            cpu, rss = cpu_seconds(pid), rss_bytes(pid)
            if cpu is None or rss is None:
                continue
            with self._lock:
                before = self._last_cpu.get((name, pid))
                self._last_cpu[(name, pid)] = cpu
                # a new pid (a restart) starts from its own zero
                delta = cpu - before if before is not None else 0.0
                self._totals[name] = self._totals.get(name, 0.0) + delta
                for phase in self._open.values():
                    usage = phase.usage.setdefault(name, Usage())
                    usage.cpu_s += delta
                    usage.peak_rss = max(usage.peak_rss, rss)
        with self._lock:
            self._series.append((CLOCK.now_ms(), dict(self._totals)))


def _totals_at(series: list[tuple[int, dict[str, float]]], at: int) -> dict[str, float]:
    """The totals at `at`, interpolated between the samples before and after it."""
    i = bisect.bisect_left(series, at, key=lambda sample: sample[0])
    t1, after = series[i]
    if t1 == at or i == 0:
        return after
    t0, before = series[i - 1]
    share = (at - t0) / (t1 - t0)
    return {n: before.get(n, 0.0) + (v - before.get(n, 0.0)) * share for n, v in after.items()}
