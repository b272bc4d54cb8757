"""A service's entry point does not import what only tests or an optional feature need.

Every import is paid at each start, and a start after a crash is time in which nothing is
delivered (BENCHMARKS.md, "Recovery"): the schema registry client alone pulled in an OAuth
stack (authlib, joserfc, httpx: about 0.3 s of a dispatcher's 1.7 s of imports on the benchmark
host), though it is used only with SCHEDULER_KAFKA_SCHEMA_REGISTRY_URL set; httpx served only
the dispatcher's unit-test HTTP adapter. Each entry point is imported in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

ENTRY_POINTS = [
    "scheduler_ingest.main",
    "scheduler_bucketer.main",
    "scheduler_releaser.releaser.main",
    "scheduler_releaser.dispatcher.main",
]
NOT_AT_START = ["confluent_kafka.schema_registry", "authlib", "httpx"]


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_an_entry_point_does_not_import_the_registry_client_or_httpx(entry_point: str) -> None:
    probe = (
        f"import sys, {entry_point}\n"
        f"print(' '.join(m for m in {NOT_AT_START!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == []
