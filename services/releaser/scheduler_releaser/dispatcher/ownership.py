"""Which ring partitions a dispatcher instance owns, and how it fences their previous owners.

Instance `i` of `N` owns every ring partition `p` with `p % N == i` (each ring topic alike).

Ownership is exclusive by construction through Kafka transactional ids. An instance commits its
deliveries and ring offsets in transactions under the id `<prefix>dispatcher-<i>-of-<N>`. Before
it reads a single committed offset, it runs `init_transactions` on the id of every instance of
every other instance count (up to `max_instances`) that owns any of its partitions. Kafka then
aborts that owner's open transaction at once and refuses every later one: its producer is fenced.
So when the instance count changes while old instances still run (a rolling update, 1 -> 2 -> 3
-> 2), an old instance can no longer commit a delivery or an offset of a partition that a new
instance has taken, and a kill -9'd one does not leave its transaction open until the timeout.
A fenced instance stands down (sink.FencedError) and never fences back: an instance fences only
at its own start. Siblings of the same count own disjoint partitions and are never fenced.
"""

from __future__ import annotations


def owns(partition: int, instance: int, instances: int) -> bool:
    return partition % instances == instance


def instance_id(prefix: str, role: str, instance: int, instances: int) -> str:
    """Stable per partition set: a transactional id (role "dispatcher") or a static member id."""
    return f"{prefix}{role}-{instance}-of-{instances}"


def transactional_id(prefix: str, instance: int, instances: int) -> str:
    return instance_id(prefix, "dispatcher", instance, instances)


def ids_to_fence(
    prefix: str, partitions: list[int], instance: int, instances: int, max_instances: int
) -> list[str]:
    """The transactional ids of the owners of `partitions` under every other instance count up
    to `max_instances`. Not our own id: the instance's producer initialises that one itself,
    which fences its own previous incarnation."""
    ids = {
        transactional_id(prefix, p % count, count)
        for count in range(1, max_instances + 1)
        if count != instances
        for p in partitions
    }
    return sorted(ids)
