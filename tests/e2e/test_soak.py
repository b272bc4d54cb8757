"""The soak runner (bench/soak.py), short, against the running e2e system: both destination
types; it must report nothing lost or early and exit 0."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from scheduler.testing.stack import find_repo
from tests.support.processes import wait_for

from .conftest import DEST_PREFIX, World

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SOAK = ["--duration-s", "6", "--rate", "25", "--horizon-s", "10", "--grace-s", "40"]


def test_soak_runner_reports_nothing_lost_or_early(shared_world: World) -> None:
    w = shared_world
    wait_for("the system ready", lambda: all(w.system.ready(n) for n in w.system.procs), 90)
    runs = {
        destination: subprocess.Popen(
            [
                sys.executable,
                "bench/soak.py",
                "--api",
                w.system.ingest,
                *SOAK,
                "--no-progress",
                "--destination",
                destination,
                "--topic-prefix",
                DEST_PREFIX,
            ],
            env=w.system.env,
            cwd=find_repo(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for destination in ("rest", "kafka")
    }
    for destination, run in runs.items():
        out, _ = run.communicate(timeout=120)
        print(f"--- soak {destination} ---\n{out}")
        assert run.returncode == 0, out
        found = re.search(r"scheduled (\d+) \(refused (\d+)\), received (\d+)", out)
        assert found, out
        scheduled, refused, received = map(int, found.groups())
        assert scheduled >= 100 and refused == 0 and received == scheduled, out
        assert re.search(r"lost 0, early 0, duplicates \d+", out), out
        assert re.search(r"arrival delay p50 \d+ ms, p99 \d+ ms, max \d+ ms", out), out
