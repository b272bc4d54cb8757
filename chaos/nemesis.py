"""The fault schedule: a pure function of the seed, the duration and the targets, so a seed
replays the same campaign. Faults never overlap: each one is injected, healed after its delay,
then the system gets a quiet gap, so a violation or a lateness spike can be pinned on one fault.
The gap is a minimum: the executor also waits for the lateness to be back to steady (up to
chaos.faults.STEADY_WAIT_S), so only the first fault's instant is fixed; a seed replays the same
faults in the same order with the same heal delays and gaps.

The executor that applies a schedule to real processes lives in chaos.faults."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

# Fault kinds and the node kinds they hit.
SERVICE_KINDS = ("ingest", "bucketer", "releaser", "dispatcher")
FAULTS: dict[str, tuple[str, ...]] = {
    "kill9": SERVICE_KINDS,  # kill -9 of one replica, restarted after the heal delay
    "pause": SERVICE_KINDS,  # SIGSTOP of one replica, SIGCONT after the heal delay
    "kafka_kill": ("kafka",),  # kill -9 of a broker, restarted after the heal delay
    "cassandra_pause": ("cassandra",),  # SIGSTOP of a Cassandra node, SIGCONT after the delay
    "cassandra_delay": SERVICE_KINDS,  # one replica's Cassandra link slowed (TCP proxy)
    "cassandra_cut": SERVICE_KINDS,  # one replica's Cassandra link cut, restored after the delay
    "kafka_delay": ("kafka_link",),  # the services' link to one broker slowed (cluster only)
    "kafka_cut": ("kafka_link",),  # the services' link to one broker cut (cluster only)
    "rolling_restart": SERVICE_KINDS,  # SIGTERM + start of each replica in turn (a Deployment)
    "rescale": ("dispatcher",),  # the dispatcher instance count moves to the next of the cycle
}
# How often each fault is drawn (kill and pause of services are the commonest in production).
WEIGHTS = {
    "kill9": 4,
    "pause": 3,
    "kafka_kill": 1,
    "cassandra_pause": 1,
    "cassandra_delay": 2,
    "cassandra_cut": 1,
    "kafka_delay": 1,
    "kafka_cut": 1,
    "rolling_restart": 1,
    "rescale": 1,
}
HEAL_MIN_S, HEAL_MAX_S = 1.0, 10.0
GAP_MIN_S, GAP_MAX_S = 10.0, 25.0  # quiet time after a heal, at least
DELAY_MIN_S, DELAY_MAX_S = 0.2, 3.0  # added latency of a slowed link
RESCALE_CYCLE = (3, 2, 1, 2)  # from the starting 2 instances: 2 -> 3 -> 2 -> 1 -> 2 -> 3 ...


@dataclass(frozen=True)
class Target:
    """A node the nemesis may hit: `name` as the topology knows it, `kind` among
    kafka, cassandra, ingest, bucketer, releaser, dispatcher, and kafka_link (the services'
    link to one broker, named as the broker)."""

    name: str
    kind: str


@dataclass(frozen=True)
class Fault:
    """One planned fault: injected `at_s` into the campaign (if every earlier one recovered at
    once: the first fault's instant, the others' earliest), healed `heal_after_s` later, then
    `gap_s` of quiet at least.
    `target` is a node name, or a service kind for rolling_restart and rescale (a dispatcher
    target is resolved against the instances running when it fires: `slot`)."""

    at_s: float
    kind: str
    target: str
    heal_after_s: float
    delay_s: float = 0.0  # cassandra_delay and kafka_delay only
    instances: int = 0  # rescale only: the new count
    slot: int = 0  # kill9/pause/link of a dispatcher: which running instance
    gap_s: float = 0.0  # quiet time after the heal, at least

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(
    seed: int, duration_s: float, targets: list[Target], warmup_s: float = 15.0
) -> list[Fault]:
    """The faults of a campaign of `duration_s` seconds, the first after `warmup_s` (a baseline
    of lateness without faults). Every fault is healed before `duration_s`."""
    rng = random.Random(seed)
    kinds_present = {t.kind for t in targets}
    usable = [k for k in FAULTS if kinds_present & set(FAULTS[k])]
    faults: list[Fault] = []
    at = warmup_s
    rescales = 0
    # every kind once first, in a seeded order (a rare kind is then never missing from a run
    # long enough for one of each), then drawn by weight
    first = rng.sample(usable, len(usable))
    while True:
        kind = (
            first.pop() if first else rng.choices(usable, weights=[WEIGHTS[k] for k in usable])[0]
        )
        heal = round(rng.uniform(HEAL_MIN_S, HEAL_MAX_S), 1)
        if at + heal > duration_s:
            break
        victim = rng.choice([t for t in targets if t.kind in FAULTS[kind]])
        target, instances, slot, delay = victim.name, 0, 0, 0.0
        if kind == "rolling_restart":
            target = victim.kind
        elif kind == "rescale":
            target = victim.kind
            instances = RESCALE_CYCLE[rescales % len(RESCALE_CYCLE)]
            rescales += 1
        elif victim.kind == "dispatcher":
            # the instances change with rescales: pick one of those running when it fires
            target, slot = "dispatcher", rng.randrange(3)
        if kind in ("cassandra_delay", "kafka_delay"):
            delay = round(rng.uniform(DELAY_MIN_S, DELAY_MAX_S), 2)
        gap = round(rng.uniform(GAP_MIN_S, GAP_MAX_S), 1)
        faults.append(Fault(round(at, 1), kind, target, heal, delay, instances, slot, gap))
        at += heal + gap
    return faults
