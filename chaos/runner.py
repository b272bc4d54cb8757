"""`make chaos`: start a private stack and the services (two replicas of each, dispatcher
instances 0 and 1 of 2), run the workload and the seeded nemesis for --duration-s, heal, settle,
check, report. Exit status 1 on any violation. `run()` is what the CI variant calls."""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient

from chaos import report
from chaos.checker import TERMINAL, Facts, FaultSpan, Verdict, check
from chaos.faults import Nemesis
from chaos.links import NodeLinks
from chaos.nemesis import Target, plan
from chaos.nodes import DispatcherFleet, ServiceNode, Topology
from chaos.stack import MAKE_CHAOS_PORTS, ClusterStack, SingleStack, campaign_stack
from chaos.steady import LiveLateness, RecoveryWatch
from chaos.workload import AppRef, Workload
from scheduler.cli import setup
from scheduler.clock import SystemClock
from scheduler.settings import CassandraSettings, KafkaSettings
from scheduler.testing.isolation import (
    delete_topic,
    delete_topics,
    drop_keyspace,
    private_cassandra,
    private_kafka,
    unique_name,
)
from scheduler.testing.processes import System, service_env
from scheduler.testing.receiver import Arrivals, HttpReceiver, KafkaReceiver
from scheduler.testing.stack import find_repo
from tests.support.shrunk import DEST_PREFIX, EXTRA_ENV, SCHEDULING
from tests.support.workload import create_app, create_control_key, create_topic

CLOCK = SystemClock()
REPLICAS = {"ingest-2": "ingest", "bucketer-2": "bucketer", "releaser-2": "releaser"}
DUE_PARTITIONS = 6  # per ring topic: each of 1..3 dispatcher instances owns two or more
SETTLE_S = 90.0  # after the last due instant: time for retries, redrives and stragglers
STATUS_TIMEOUT_S = 120.0  # reading every record until each is terminal
START_TIMEOUT_S = 600.0  # the services' first start, all at once
GRACE_S = 3.0  # after the last arrival: time for a late duplicate to show
# Load before the first fault. The cluster's six JVMs are cold at first: without faults, its
# lateness took about 150 s to settle (p50 5-8 s at first, 0.3-0.5 s after; docs/CHAOS.md).
WARMUP_S = {"single": 15.0, "cluster": 180.0}


@dataclass
class Options:
    duration_s: float = 600.0
    seed: int = 0
    rate: float = 50.0
    topology: str = "single"
    out: Path | None = None
    keep_stack: bool = False
    longest_s: float = 45.0  # furthest sendAt of the workload
    warmup_s: float = 15.0  # load without faults first: the first fault's pre-fault p99
    # (the command line's default depends on the topology: WARMUP_S)
    ports: int = MAKE_CHAOS_PORTS  # the private stack's port base (chaos.stack)
    kafka_links: bool = False  # cluster only: the services' Kafka traffic through proxies


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="make chaos", description=__doc__)
    p.add_argument("--duration-s", type=float, default=600.0, help="load + faults, seconds")
    p.add_argument("--seed", type=int, default=None, help="replays the same fault schedule")
    p.add_argument("--rate", type=float, default=50.0, help="messages per second")
    p.add_argument("--topology", choices=["single", "cluster"], default="single")
    p.add_argument("--out", type=Path, default=None, help="default .local/chaos/<time>-s<seed>")
    p.add_argument("--keep-stack", action="store_true", help="leave the private stack running")
    p.add_argument(
        "--kafka-links",
        action="store_true",
        help="cluster only: the services reach the brokers through proxies, and kafka_delay and"
        " kafka_cut are drawn (costly: see docs/CHAOS.md)",
    )
    p.add_argument("--longest-s", type=float, default=45.0, help="furthest sendAt, seconds")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help=f"load before the first fault (default {WARMUP_S['single']:.0f} s on the single"
        f" topology, {WARMUP_S['cluster']:.0f} s on the cluster: cold JVMs)",
    )
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1_000_000)
    return Options(
        a.duration_s,
        seed,
        a.rate,
        a.topology,
        a.out,
        a.keep_stack,
        a.longest_s,
        WARMUP_S[a.topology] if a.warmup_s is None else a.warmup_s,
        kafka_links=a.kafka_links,
    )


def log(what: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {what}", flush=True)


def run(options: Options, command: str = "make chaos") -> tuple[Verdict, Path]:
    out = options.out or find_repo() / ".local" / "chaos" / (
        f"{time.strftime('%Y%m%d-%H%M%S')}-s{options.seed}"
    )
    (out / "logs").mkdir(parents=True, exist_ok=True)
    stack = campaign_stack(options.topology, options.ports, options.kafka_links)
    log(f"seed {options.seed}; output {out}; starting the {options.topology} stack")
    stack.up()
    servers = stack.servers
    unique = unique_name()
    rf = stack.replication
    kafka = private_kafka(servers, unique).model_copy(
        update={
            "due_partitions": DUE_PARTITIONS,
            "replication_factor": rf,
            "min_insync_replicas": min(2, rf),
        }
    )
    cassandra = private_cassandra(servers, unique).model_copy(
        update={"replication_factor": rf, "consistency": "LOCAL_QUORUM" if rf > 1 else "LOCAL_ONE"}
    )
    dest_topic = f"{DEST_PREFIX}{kafka.topic_prefix}out"
    verdict = None
    try:
        setup(kafka, cassandra, SCHEDULING)
        # Replicated as the scheduler's own topics: with one replica, a broker kill made half
        # the destination unavailable until the broker came back, and its deliveries FAILED
        # once their attempts were used up (seed 2026: 37 reported lost).
        create_topic(
            kafka,
            dest_topic,
            partitions=2,
            replication_factor=rf,
            config={"min.insync.replicas": str(min(2, rf))},
        )
        verdict, out = _campaign(options, out, stack, kafka, cassandra, dest_topic, command)
        return verdict, out
    finally:
        if verdict is not None and not verdict.ok:
            # the evidence of a violation: the records and the topics stay for a look
            log(
                f"kept for inspection: keyspace {cassandra.keyspace}, topics"
                f" {kafka.topic_prefix}* and {dest_topic} (the stack's state dir keeps them)"
            )
        else:
            for cleanup in (lambda: delete_topics(kafka), lambda: delete_topic(kafka, dest_topic)):
                _quietly(cleanup)
            _quietly(lambda: drop_keyspace(cassandra))
        if not options.keep_stack:
            stack.down()


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 (cleanup of a private stack: report, go on)
        log(f"cleanup: {type(exc).__name__}: {exc}")


def _start_system(
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    stack: SingleStack | ClusterStack,
    logs: Path,
) -> tuple[System, Topology]:
    """Two processes of each service, each with its own links to the Cassandra nodes (TCP
    proxies the nemesis can slow or cut); the dispatcher as instances 0 and 1 of 2."""
    ports = System.ports_for()
    extra = {
        **EXTRA_ENV,
        **stack.production_env,
        "SCHEDULER_KAFKA_BOOTSTRAP_SERVERS": stack.services_bootstrap(),
        "SCHEDULER_INGEST_PRODUCE_TIMEOUT_MS": "3000",
    }
    system = System(service_env(kafka, cassandra, SCHEDULING, ports, extra), ports, logs)
    for name, service in {**REPLICAS, "dispatcher-1": "dispatcher"}.items():
        system.add_replica(service, name)
    broker_links = stack.broker_links()  # before the services: they bootstrap through them

    def links() -> NodeLinks:
        return NodeLinks.cassandra(cassandra.contact_points, cassandra.port)

    proxies: dict[str, NodeLinks] = {}
    for name in system.names:
        proxies[name] = links()
        system.env_overrides.setdefault(name, {}).update(proxies[name].env)
    for i, name in enumerate(("dispatcher", "dispatcher-1")):
        system.env_overrides[name].update(
            {"SCHEDULER_DISPATCH_INSTANCE": str(i), "SCHEDULER_DISPATCH_INSTANCES": "2"}
        )
    system.start(*system.names, wait=False)
    try:
        # eight Python services starting at once took over 3 minutes at a load average of 25
        system.wait_ready(*system.names, timeout_s=START_TIMEOUT_S)
    except BaseException:
        system.stop()  # a failed start leaves no process behind (two bucketers once did)
        for proxy in [*proxies.values(), *broker_links.values()]:
            proxy.close()
        raise
    services = [
        ServiceNode(system, n, system.replicas.get(n, n))
        for n in system.names
        if system.replicas.get(n, n) != "dispatcher"
    ]
    fleet = DispatcherFleet(system, proxies, links, ["dispatcher", "dispatcher-1"])
    roles = kafka_roles(kafka) if isinstance(stack, ClusterStack) else {}
    servers = stack.server_nodes()
    return system, Topology(servers, services, fleet, proxies, roles, broker_links)


TXN_STATE_TOPIC = "__transaction_state"  # one partition on the local brokers: one coordinator


def kafka_roles(kafka: KafkaSettings) -> dict[str, Callable[[], str]]:
    """The brokers a kill hurts most, found when the fault fires: the leader of partition 0 of
    the ring topic due next, and the transaction coordinator (the leader of the transaction
    state partition; the local brokers keep one, so it coordinates every dispatcher)."""

    def leader(topic: str) -> str:
        admin = AdminClient(kafka.client_config())
        metadata = admin.list_topics(topic, timeout=10)
        return f"kafka-{metadata.topics[topic].partitions[0].leader}"

    return {
        "kafka:ring-leader": lambda: leader(
            SCHEDULING.ring(kafka).topic_for(CLOCK.now_ms() + SCHEDULING.ring_slot_ms)
        ),
        "kafka:txn-coordinator": lambda: leader(TXN_STATE_TOPIC),
    }


def targets(topology: Topology) -> list[Target]:
    nodes: list[Any] = [*topology.servers, *topology.services, *topology.replicas("dispatcher")]
    return [
        *(Target(n.name, n.kind) for n in nodes),
        *(Target(role, "kafka") for role in topology.roles),
        *(Target(broker, "kafka_link") for broker in topology.broker_links),
    ]


LIVENESS_PERIOD_S = 10.0  # the Deployments' livenessProbe (deploy/k8s): every 10 s,
LIVENESS_TIMEOUT_S = 3.0  # 3 s to answer,
LIVENESS_FAILURES = 6  # restarted after 6 failures in a row


class Supervisor:
    """What Kubernetes does for the Deployments: restarts a service process that exited on its
    own, or whose /healthz failed LIVENESS_FAILURES times in a row (kill -9, then start), and
    records it. Idle while a fault is applied (a paused process is the nemesis's)."""

    def __init__(self, topology: Topology, nemesis: Nemesis) -> None:
        self.topology = topology
        self.nemesis = nemesis
        self.exits: list[str] = []
        self.failures: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(LIVENESS_PERIOD_S):
            if not self.nemesis.lock.acquire(blocking=False):
                continue
            try:
                for node in self.topology.processes():
                    if not self.stop.is_set():
                        self._look_at(node)
            finally:
                self.nemesis.lock.release()

    def _look_at(self, node: ServiceNode) -> None:
        code = node.exited()
        if code is None and not self._alive(node.name):
            self.failures[node.name] = self.failures.get(node.name, 0) + 1
            if self.failures[node.name] < LIVENESS_FAILURES:
                return
            node.kill9()
            code = node.exited()
            reason = f"liveness failed {LIVENESS_FAILURES} times"
        elif code is not None:
            reason = f"exit {code}"
        else:
            self.failures[node.name] = 0
            return
        self.failures[node.name] = 0
        self.exits.append(f"{node.name} {reason} at {CLOCK.now_ms()}")
        log(f"{node.name}: {reason}: restarting it")
        try:
            node.start()
        except AssertionError as exc:
            log(f"{node.name} restart failed: {exc}")

    def _alive(self, name: str) -> bool:
        url = self.topology.fleet.system.url(name, "/healthz")
        try:
            return httpx.get(url, timeout=LIVENESS_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False


def _campaign(
    options: Options,
    out: Path,
    stack: SingleStack | ClusterStack,
    kafka: KafkaSettings,
    cassandra: CassandraSettings,
    dest_topic: str,
    command: str,
) -> tuple[Verdict, Path]:
    system, topology = _start_system(kafka, cassandra, stack, out / "logs")
    arrivals = Arrivals()
    healed: set[str] = set()

    def answer(path: str, message_id: str) -> int:
        return 500 if path.startswith("/flaky") and message_id not in healed else 204

    http = HttpReceiver(arrivals, answer).start()
    consumer = KafkaReceiver(arrivals, kafka.bootstrap_servers, dest_topic).start()
    try:
        control = create_control_key(system.env, f"chaos-{uuid.uuid4().hex[:6]}@example.com")
        apps = {}
        for name, kind, endpoint in (
            ("rest", "REST", http.url),
            ("kafka", "KAFKA", dest_topic),
            ("flaky", "REST", f"http://127.0.0.1:{http.port}/flaky"),
        ):
            app = create_app(system.ingest, control, kind, endpoint)
            apps[name] = AppRef(
                app.app_id, app.destination, app.client.headers["Authorization"], name == "flaky"
            )
            app.close()
        ingest_urls = [system.url(n) for n in ("ingest", "ingest-2")]
        workload = Workload(
            ingest_urls, apps, kafka, SCHEDULING, CLOCK, options.rate, options.seed, healed
        )
        workload.longest_ms = int(options.longest_s * 1000)
        faults = plan(options.seed, options.duration_s, targets(topology), options.warmup_s)
        log(
            f"{len(faults)} faults planned over {options.duration_s:.0f} s (the first after"
            f" {options.warmup_s:.0f} s; each later one waits for steady: fewer may fit)"
        )
        stop = threading.Event()
        recovery = RecoveryWatch(LiveLateness(workload.ledger, arrivals))
        nemesis = Nemesis(topology, CLOCK, stop.wait, log, recovery)
        supervisor = Supervisor(topology, nemesis)
        started_ms = CLOCK.now_ms()
        workload.start()
        nemesis_thread = threading.Thread(
            target=nemesis.run, args=(faults, started_ms), name="nemesis", daemon=True
        )
        nemesis_thread.start()
        supervisor.thread.start()
        stop.wait(options.duration_s)
        stop.set()  # a fault under way is still healed (its waits return at once)
        nemesis_thread.join(600)
        workload.finish()
        log(f"load stopped: {len(workload.ledger.acked)} acknowledged; settling")
        _settle(workload, arrivals, options)
        statuses, unreadable = read_statuses(ingest_urls, apps, workload)
        supervisor.stop.set()
        supervisor.thread.join(180)
        time.sleep(GRACE_S)
        ledger = workload.ledger
        facts = Facts(
            acked=ledger.acked,
            aborts=ledger.aborts,
            arrivals=arrivals.snapshot(),
            statuses=statuses,
            faults=[
                FaultSpan(w.kind, w.target, w.started_ms, w.healed_ms) for w in nemesis.timeline
            ],
            idempotency=ledger.idempotency,
            redriven=ledger.redriven,
        )
        verdict = check(facts)
        meta: dict[str, Any] = {
            "command": command,
            "seed": options.seed,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "rate": options.rate,
            "topology": options.topology + (" + Kafka links" if options.kafka_links else ""),
            "started_ms": started_ms,
            "planned_faults": [f.as_dict() for f in faults],
            "refused": ledger.refused,
            "errors": ledger.errors,
            "exits": supervisor.exits,
            "redriven": len(ledger.redriven),
            "unreadable": unreadable,
            "aborts_sent": len(ledger.aborts),
        }
        report.write(out, verdict, meta, [w.as_dict() for w in nemesis.timeline], facts)
        log(f"verdict: {'PASS' if verdict.ok else 'FAIL'} {verdict.violations}; {out}/report.md")
        return verdict, out
    finally:
        consumer.close()
        http.close()
        system.stop()
        for proxy in [*topology.proxies.values(), *topology.broker_links.values()]:
            proxy.close()


def _settle(workload: Workload, arrivals: Arrivals, options: Options) -> None:
    """Until every acknowledged message not aborted arrived, or the last due instant plus
    SETTLE_S passed."""
    ledger = workload.ledger
    last_due = max((a.send_at_ms for a in ledger.acked), default=CLOCK.now_ms())
    deadline = max(last_due, CLOCK.now_ms()) + SETTLE_S * 1000
    aborted = {a.message_id for a in ledger.aborts}
    wanted = {a.message_id for a in ledger.acked} - aborted
    while CLOCK.now_ms() < deadline:
        missing = wanted - arrivals.ids()
        if not missing and CLOCK.now_ms() > last_due:
            return
        time.sleep(1.0)
    log(f"settle: {len(wanted - arrivals.ids())} still missing at the deadline")


def read_statuses(
    ingest_urls: list[str], apps: dict[str, AppRef], workload: Workload
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Every acknowledged message's status from the API, read again until terminal, for up to
    STATUS_TIMEOUT_S after the first pass (which alone can take minutes: 22,000 reads); and,
    for each message whose status could not be read at the last try, why (the answer or the
    error: the report's `unreadable`)."""
    by_id = {a.message_id: a for a in workload.ledger.acked}
    statuses: dict[str, str | None] = dict.fromkeys(by_id)
    why: dict[str, str] = {}
    clients = {
        (name, url): httpx.Client(base_url=url, headers={"Authorization": app.auth}, timeout=10)
        for name, app in apps.items()
        for url in ingest_urls
    }

    def one(message_id: str, attempt: int) -> tuple[str, str | None, str]:
        acked = by_id[message_id]
        name = "flaky" if acked.flaky else acked.destination
        url = ingest_urls[attempt % len(ingest_urls)]  # another replica on each pass
        try:
            answer = clients[(name, url)].get(f"/messages/{message_id}")
        except httpx.HTTPError as exc:
            return message_id, None, f"{url}: {type(exc).__name__}: {exc}"
        if answer.status_code != 200:
            return message_id, None, f"{url}: {answer.status_code} {answer.text[:200]}"
        return message_id, answer.json().get("status"), ""

    deadline = None
    pending = list(by_id)
    attempt = 0
    with ThreadPoolExecutor(8) as pool:
        while pending and (deadline is None or time.monotonic() < deadline):
            for message_id, status, reason in pool.map(one, pending, [attempt] * len(pending)):
                statuses[message_id] = status
                why[message_id] = reason
            deadline = deadline or time.monotonic() + STATUS_TIMEOUT_S
            attempt += 1
            pending = [m for m in pending if statuses[m] not in TERMINAL]
            if pending:
                log(f"{len(pending)} records not terminal yet")
                time.sleep(5.0)
    for client in clients.values():
        client.close()
    return statuses, {m: why[m] for m in pending if statuses[m] is None}


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    command = "make chaos CHAOS_ARGS=" + repr(" ".join(sys.argv[1:] if argv is None else argv))
    verdict, _ = run(options, command)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
