"""A rolling update with the previous version's processes beside this one's, both ways.

The previous version is a pinned commit of this repository, run from a copy of its `libs/` and
`services/` (on PYTHONPATH, ahead of this checkout) with this checkout's dependencies. Under
steady load through both versions' ingest and from a Kafka-native producer:

1. rollback: this version's services are replaced one by one by the previous version's (each
   starts beside the one it replaces, which is stopped once it is ready), so the previous
   version reads what this one wrote;
2. upgrade: the same the other way round.

Nothing acknowledged is lost, nothing is early, a KAFKA destination sees no duplicate.
"""

from __future__ import annotations

import io
import random
import subprocess
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from scheduler.clock import SystemClock
from scheduler.testing.servers import Servers
from tests.support.ledger import Ledger
from tests.support.processes import System
from tests.support.workload import App, NotAccepted, produce, schedule_batch

from .conftest import World, private_settings, world

# Eight process starts and stops one after the other: 149 s on a quiet host, over 300 s in a
# CI run on a loaded one (each replacement took 45-60 s, a bucketer 21 s to start).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

CLOCK = SystemClock()
# The previous version: the last commit before encryption at rest, TLS, the ingest metrics port
# and the (app, message id) dedup keys. Bump it when a release changes a format again.
PREVIOUS = "e00a8e96"
REPO = Path(__file__).resolve().parents[2]
ORDER = ("ingest", "bucketer", "releaser", "dispatcher")
PER_TICK = 6
STEADY_S = 2.0  # feeding between two replacements


def previous_version(into: Path) -> list[str]:
    """The previous version's packages, extracted from git; their import roots."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS, "libs", "services"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return [
        str(into / "libs"),
        *(str(into / "services" / s) for s in ("ingest", "bucketer", "releaser")),
    ]


def replace(system: System, old: str, new: str) -> None:
    """Start `new` beside `old` (a process of the same service), then stop `old` (it must
    stop cleanly). Prints how long each took (shown when the test fails)."""
    started = time.monotonic()
    system.start(new)
    ready = time.monotonic()
    time.sleep(STEADY_S)
    stopping = time.monotonic()
    assert system.stop(old) == {old: 0}, system.tail()
    print(
        f"{old} -> {new}: ready in {ready - started:.1f} s, "
        f"stopped in {time.monotonic() - stopping:.1f} s",
        flush=True,
    )
    time.sleep(STEADY_S)


def feed(
    routes: dict[str, list[App]],
    ledger: Ledger,
    stop: threading.Event,
    errors: list[Exception],
    accepted: Counter[str],
) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        now = CLOCK.now_ms()
        for route, app in ((r, a) for r, apps in routes.items() for a in apps):
            send_ats = [
                now + rng.choice((500, 3_000, 9_000)) + rng.randint(0, 999) for _ in range(PER_TICK)
            ]
            try:
                accepted[route] += len(schedule_batch(app, ledger, send_ats, tag="upgrade"))
            except httpx.HTTPError:
                pass  # that ingest is stopped or starting: a client retries elsewhere
            except NotAccepted as refused:
                if refused.status_code < 500:
                    errors.append(refused)
                    return
            except Exception as unexpected:
                errors.append(unexpected)
                return
        stop.wait(0.25)


def native(w: World, ledger: Ledger) -> None:
    """Kafka-native requests of both apps, due over the next 8 s."""
    now = CLOCK.now_ms()
    for app in (w.rest, w.kafka_app):
        produce(w.kafka, w.scheduling, app, ledger, [now + 2_000 + 100 * i for i in range(60)])


def through(app: App, url: str) -> App:
    """The same app and data key, through another ingest process."""
    client = httpx.Client(base_url=url, headers=dict(app.client.headers), timeout=30)
    return App(app.app_id, app.destination, client)


def test_previous_and_this_version_side_by_side_lose_nothing_both_ways(
    servers: Servers, tmp_path: Path
) -> None:
    roots = previous_version(tmp_path / "previous")
    kafka, cassandra = private_settings(servers)
    logs = tmp_path / "logs"
    logs.mkdir()
    with world(kafka, cassandra, logs) as w:
        system = w.system
        for service in ORDER:
            system.add_replica(service, f"previous-{service}")
            system.env_overrides[f"previous-{service}"]["PYTHONPATH"] = ":".join(roots)
        ledger = Ledger()
        stop = threading.Event()
        errors: list[Exception] = []
        accepted: Counter[str] = Counter()
        apps = [w.rest, w.kafka_app]
        previous_apps = [through(a, system.url("previous-ingest")) for a in apps]
        routes = {"this": apps, "previous": previous_apps}
        feeder = threading.Thread(
            target=feed, args=(routes, ledger, stop, errors, accepted), daemon=True
        )
        feeder.start()
        try:
            native(w, ledger)
            for service in ORDER:  # rollback: the previous version takes over
                replace(system, service, f"previous-{service}")
            # It is the previous code that runs: its ingest serves /metrics on the API port,
            # which this version moved to a port of its own.
            assert httpx.get(system.url("previous-ingest", "/metrics")).status_code == 200
            native(w, ledger)
            for service in ORDER:  # upgrade: this version takes over again
                replace(system, f"previous-{service}", service)
            assert httpx.get(system.url("ingest", "/metrics")).status_code == 404
        finally:
            stop.set()
            feeder.join(30)
            for app in previous_apps:
                app.close()
        assert not feeder.is_alive() and errors == [], errors
        last_due = max(p.send_at_ms for p in ledger.planned.values())
        report = w.wait_delivered(ledger, timeout_s=(last_due - CLOCK.now_ms()) / 1000 + 60)
        print(f"side by side: {report.summary()}; accepted by ingest {dict(accepted)}")
        assert len(ledger) > 500
        assert report.lost == []
        assert report.early == []
        assert report.duplicates.get("kafka", 0) == 0, report.duplicates
        # Both versions' ingest accepted a share of the feed (the previous one really ran).
        assert accepted["previous"] >= 4 * PER_TICK and accepted["this"] >= 4 * PER_TICK
