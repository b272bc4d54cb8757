"""What the figures were measured on: machine, versions, for the report's header."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = (
    "confluent-kafka",
    "cassandra-driver",
    "fastapi",
    "uvicorn",
    "httpx",
    "fastavro",
    "pydantic",
    "matplotlib",
)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else "unknown"


def memory_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^MemTotal:\s*(\d+) kB", text, re.M)
    return round(int(found.group(1)) / 2**20, 1) if found else 0.0


def jar_version(lib: Path, pattern: str) -> str:
    """Kafka and Cassandra versions from the jar names of the local stack (devservers/*/lib)."""
    for jar in sorted(lib.glob("*.jar")) if lib.exists() else []:
        found = re.fullmatch(pattern, jar.name)
        if found:
            return found.group(1)
    return "unknown"


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


CALIBRATION_ADDITIONS = 10_000_000


def calibration_s(runs: int = 3) -> float:
    """The machine's speed, for the report's header: the median time of a plain Python loop of
    10 M additions. Machines of the same kind differ by 2x and more (1.0-1.8 s was seen on one
    2-core host), and a figure of lateness means little without it."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        total = 0
        for i in range(CALIBRATION_ADDITIONS):
            total += i
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 2)


def speed_line(seconds: float | None) -> str:
    if seconds is None:
        return "not measured (these figures predate the calibration loop)"
    return f"a plain Python loop of 10 M additions takes {seconds} s here (median of 3)"


def describe(repo: Path) -> dict[str, object]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "absent"
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "calibration_s": calibration_s(),
        "python": platform.python_version(),
        "kafka": jar_version(repo / "devservers/kafka/lib", r"kafka_[\d.]+-([\d.]+)\.jar"),
        "cassandra": jar_version(repo / "devservers/cassandra/lib", r"cassandra-all-([\d.]+)\.jar"),
        "packages": packages,
        "commit": git_commit(repo),
    }
