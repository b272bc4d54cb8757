#!/usr/bin/env python3
"""The whole system on the local stack: setup, then the four services as background processes.

Usage: .venv/bin/python devservers/system.py [--topology single|cluster] up|down|status|setup

Settings: devservers/local.env (the local profile), overridden by the environment. Logs go to
``.local/logs/<service>.log``, pid files to ``.local/run/<service>.pid``. `up` is idempotent: a
service that runs and answers its readiness probe is left alone, a dead one is started again,
and one that runs but stays not ready is stopped and started again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stack import is_alive, rotate_log, rss_mib, terminate

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("SCHEDULER_STACK_STATE_DIR", ROOT / ".local"))
BIN = ROOT / ".venv" / "bin"
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 30.0
NOT_READY_GRACE_S = 15.0  # a running service not ready this long is restarted by `up`


def say(message: str) -> None:
    print(f"[system] {message}", flush=True)


def local_env() -> dict[str, str]:
    """The process environment over the local profile (the environment wins)."""
    profile: dict[str, str] = {}
    for line in (ROOT / "devservers" / "local.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            profile[key.strip()] = value.strip()
    return {**profile, **os.environ}


@dataclass(frozen=True)
class Service:
    name: str
    command: str
    port_variable: str
    metrics_port_variable: str = ""  # ingest's /metrics has a port of its own
    # a replica of the cluster topology: its own variables (ports, dispatcher instance) and dir
    overrides: tuple[tuple[str, str], ...] = ()
    state_dir: Path | None = None  # None: STATE

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, **dict(self.overrides)}

    def port(self, env: dict[str, str]) -> int:
        return int(env[self.port_variable])

    def url(self, env: dict[str, str], path: str) -> str:
        return f"http://127.0.0.1:{self.port(env)}{path}"

    def metrics_url(self, env: dict[str, str]) -> str:
        port = env[self.metrics_port_variable or self.port_variable]
        return f"http://127.0.0.1:{port}/metrics"

    @property
    def pidfile(self) -> Path:
        return (self.state_dir or STATE) / "run" / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return (self.state_dir or STATE) / "logs" / f"{self.name}.log"


SERVICES = (
    Service("ingest", "scheduler-ingest", "SCHEDULER_INGEST_PORT", "SCHEDULER_INGEST_METRICS_PORT"),
    Service("bucketer", "scheduler-bucketer", "SCHEDULER_BUCKETER_METRICS_PORT"),
    Service("releaser", "scheduler-releaser", "SCHEDULER_RELEASE_METRICS_PORT"),
    Service("dispatcher", "scheduler-dispatcher", "SCHEDULER_DISPATCH_METRICS_PORT"),
)


def probe(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200, response.read(300).decode(errors="replace")
    except urllib.error.HTTPError as err:
        return False, err.read(300).decode(errors="replace")
    except OSError as exc:
        return False, str(exc)


def running_pid(service: Service) -> int | None:
    try:
        pid = int(service.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_alive(pid) else None


def start(service: Service, env: dict[str, str]) -> None:
    service.log.parent.mkdir(parents=True, exist_ok=True)
    service.pidfile.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(service.log)
    with service.log.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / service.command)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service.pidfile.write_text(f"{process.pid}\n")


def wait_ready(service: Service, env: dict[str, str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        pid = running_pid(service)
        if pid is None:
            raise RuntimeError(
                f"{service.name} exited; last lines of {service.log}:\n{tail(service)}"
            )
        ready, why = probe(service.url(env, "/readyz"))
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service.name} not ready after {START_TIMEOUT_S:.0f} s: {why}")
        time.sleep(0.3)


def tail(service: Service, lines: int = 30) -> str:
    try:
        return "\n".join(service.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def setup(env: dict[str, str]) -> None:
    result = subprocess.run([str(BIN / "scheduler"), "setup"], env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError("scheduler setup failed")


def ensure_started(service: Service, env: dict[str, str]) -> bool:
    """Leave a ready service alone (False); start a dead one; restart one that is alive but
    stays not ready for NOT_READY_GRACE_S (wedged, or stopping and stuck), rather than wait on
    it forever. True: started, wait for its readiness."""
    pid = running_pid(service)
    if pid is None:
        start(service, env)
        return True
    deadline = time.monotonic() + NOT_READY_GRACE_S
    while True:
        ready, why = probe(service.url(env, "/readyz"))
        if ready:
            say(f"{service.name}: already running (pid {pid})")
            return False
        if time.monotonic() >= deadline or running_pid(service) is None:
            break
        time.sleep(0.5)
    if running_pid(service) is not None:
        how = terminate([pid], STOP_GRACE_S)
        say(f"{service.name}: pid {pid} alive but not ready ({why[:120]}): stopped ({how})")
    start(service, env)
    return True


def up(env: dict[str, str], services: tuple[Service, ...] = SERVICES) -> int:
    setup(env)
    started = []
    for service in services:
        if ensure_started(service, service.environment(env)):
            started.append(service)
    began = time.monotonic()
    try:
        for service in started:
            wait_ready(service, service.environment(env))
            say(f"{service.name}: ready (pid {running_pid(service)})")
    except RuntimeError as exc:
        say(f"FAILED: {exc}")
        return 1
    if started:
        say(f"started {len(started)} service(s) in {time.monotonic() - began:.1f} s")
    ingest = services[0]
    docs, openapi = (ingest.url(ingest.environment(env), p) for p in ("/docs", "/openapi.json"))
    say(f"API docs: {docs}  OpenAPI: {openapi}")
    say("metrics: " + "  ".join(s.metrics_url(s.environment(env)) for s in services))
    say(f"logs: {(ingest.state_dir or STATE) / 'logs'}/<service>.log   try: make demo")
    return 0


def down(env: dict[str, str], services: tuple[Service, ...] = SERVICES) -> int:
    for service in reversed(services):  # stop the intake first
        pid = running_pid(service)
        if pid is None:
            say(f"{service.name}: not running")
        else:
            say(f"{service.name}: stopped ({terminate([pid], STOP_GRACE_S)})")
        service.pidfile.unlink(missing_ok=True)
    return 0


def status(env: dict[str, str], services: tuple[Service, ...] = SERVICES) -> int:
    healthy = True
    for service in services:
        pid = running_pid(service)
        if pid is None:
            say(f"{service.name}: not running")
            healthy = False
            continue
        ready, why = probe(service.url(service.environment(env), "/readyz"))
        healthy &= ready
        rss = rss_mib(pid)
        state = "ready" if ready else f"NOT ready: {why[:120]}"
        memory = f", RSS {rss:.0f} MiB" if rss is not None else ""
        say(f"{service.name}: pid {pid}, {state}{memory}")
    return 0 if healthy else 1


def topology(name: str) -> tuple[dict[str, str], tuple[Service, ...]]:
    """The environment and the services of a topology: `single` (one of each, local.env) or
    `cluster` (two of each on the 3-node cluster, devservers/cluster.py)."""
    if name == "single":
        return local_env(), SERVICES
    from cluster import cluster_env, cluster_services  # devservers/cluster.py imports us

    return cluster_env(), cluster_services()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topology", choices=["single", "cluster"], default="single")
    parser.add_argument("command", choices=["up", "down", "status", "setup"])
    args = parser.parse_args(argv)
    env, services = topology(args.topology)
    if args.command == "setup":
        setup(env)
        return 0
    return {"up": up, "down": down, "status": status}[args.command](env, services)


if __name__ == "__main__":
    sys.exit(main())
