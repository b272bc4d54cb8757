"""Which ring partitions a dispatcher instance owns, and whose transactional ids it fences at its
start (ownership.py); the settings that bound the instance count; a fence reaching the sink
mid-commit makes it stand down (FencedError), whichever call reports it."""

from __future__ import annotations

import os
import re

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from scheduler_releaser.dispatcher.ownership import ids_to_fence, owns, transactional_id
from scheduler_releaser.dispatcher.ports import OutRecord
from scheduler_releaser.dispatcher.sink import FatalSinkError, FencedError
from scheduler_releaser.settings import DispatchSettings

from .test_sink_and_ring import FakeProducer, run, sink

pytestmark = pytest.mark.unit

PREFIX = "t1."
ID = re.compile(r"^t1\.dispatcher-(\d+)-of-(\d+)$")


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[int], int, int, int]:
    """(this instance's partitions, instance, instances, max_instances), as the dispatcher
    computes them: the owned subset of 0..total-1."""
    max_instances = draw(st.integers(1, 8))
    instances = draw(st.integers(1, max_instances))
    instance = draw(st.integers(0, instances - 1))
    total = draw(st.integers(0, 60))
    partitions = [p for p in range(total) if owns(p, instance, instances)]
    return partitions, instance, instances, max_instances


def parse(transactional: str) -> tuple[int, int]:
    found = ID.match(transactional)
    assert found, transactional
    return int(found[1]), int(found[2])


# --- owns ---------------------------------------------------------------------------------------


@given(st.integers(0, 10_000), st.integers(1, 12))
def test_every_partition_has_exactly_one_owner_per_instance_count(
    partition: int, instances: int
) -> None:
    owners = [i for i in range(instances) if owns(partition, i, instances)]
    assert owners == [partition % instances]


def test_owns_splits_six_partitions_by_remainder() -> None:
    assert [p for p in range(6) if owns(p, 0, 1)] == [0, 1, 2, 3, 4, 5]
    assert [p for p in range(6) if owns(p, 0, 2)] == [0, 2, 4]
    assert [p for p in range(6) if owns(p, 1, 2)] == [1, 3, 5]
    assert [p for p in range(6) if owns(p, 2, 3)] == [2, 5]


def test_transactional_id_names_instance_and_count() -> None:
    assert transactional_id("scheduler.", 1, 3) == "scheduler.dispatcher-1-of-3"
    assert transactional_id(PREFIX, 0, 1) != transactional_id(PREFIX, 0, 2)


# --- ids_to_fence -------------------------------------------------------------------------------


@given(layouts())
def test_never_fences_its_own_id_nor_a_sibling(layout: tuple[list[int], int, int, int]) -> None:
    partitions, instance, instances, max_instances = layout
    fenced = ids_to_fence(PREFIX, partitions, instance, instances, max_instances)
    assert transactional_id(PREFIX, instance, instances) not in fenced
    # siblings (same count) own disjoint partitions: none of them is fenced
    assert all(parse(t)[1] != instances for t in fenced), fenced


@given(layouts())
def test_fences_exactly_the_other_counts_owners_of_its_partitions(
    layout: tuple[list[int], int, int, int],
) -> None:
    partitions, instance, instances, max_instances = layout
    fenced = ids_to_fence(PREFIX, partitions, instance, instances, max_instances)
    expected = {
        transactional_id(PREFIX, p % count, count)
        for count in range(1, max_instances + 1)
        if count != instances
        for p in partitions
    }
    assert set(fenced) == expected
    assert fenced == sorted(set(fenced))  # each once, in a stable order
    for t in fenced:
        i, n = parse(t)
        assert 1 <= n <= max_instances and n != instances
        assert any(owns(p, i, n) for p in partitions)  # it owned one of ours


@given(layouts(), st.data())
def test_any_other_count_owner_of_a_shared_partition_is_fenced(
    layout: tuple[list[int], int, int, int], data: st.DataObject
) -> None:
    """Whoever may still run from another instance count (a rolling update, either direction)
    and owns one of this instance's partitions loses its transactional id."""
    partitions, instance, instances, max_instances = layout
    fenced = set(ids_to_fence(PREFIX, partitions, instance, instances, max_instances))
    count = data.draw(st.integers(1, max_instances).filter(lambda n: n != instances))
    other = data.draw(st.integers(0, count - 1))
    shares = any(owns(p, other, count) for p in partitions)
    assert (transactional_id(PREFIX, other, count) in fenced) == shares


def test_rolling_update_one_two_three_two_on_six_partitions() -> None:
    def fenced_by(instance: int, instances: int) -> set[str]:
        mine = [p for p in range(6) if owns(p, instance, instances)]
        return set(ids_to_fence(PREFIX, mine, instance, instances, 6))

    one = transactional_id(PREFIX, 0, 1)
    two = {transactional_id(PREFIX, i, 2) for i in range(2)}
    three = {transactional_id(PREFIX, i, 3) for i in range(3)}
    # 1 -> 2: each new instance fences the single old one
    assert all(one in fenced_by(i, 2) for i in range(2))
    # 2 -> 3: instance 0-of-3 owns 0 and 3 (one even, one odd): both old owners; together the
    # new instances fence every old one
    assert two <= fenced_by(0, 3)
    assert two <= set().union(*(fenced_by(i, 3) for i in range(3)))
    # 3 -> 2: 0-of-2 owns 0, 2, 4 (owned by 0-, 2- and 1-of-3)
    assert three <= fenced_by(0, 2)
    assert three <= fenced_by(1, 2)
    # and nobody fences a sibling
    assert not (two & fenced_by(0, 2)) and not (three & fenced_by(1, 3))


def test_counts_above_max_instances_are_not_fenced() -> None:
    fenced = ids_to_fence(PREFIX, list(range(12)), 0, 1, 3)
    assert {parse(t)[1] for t in fenced} == {2, 3}


def test_no_partitions_fences_nobody() -> None:
    assert ids_to_fence(PREFIX, [], 0, 2, 6) == []


# --- settings -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_dispatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read SCHEDULER_DISPATCH_*: none from the caller's shell."""
    for name in list(os.environ):
        if name.startswith("SCHEDULER_DISPATCH_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("instance", "instances", "max_instances"),
    [(0, 1, 1), (0, 1, 6), (1, 2, 6), (5, 6, 6), (2, 3, 3), (6, 7, 8)],
)
def test_settings_accept_instance_below_instances_within_max(
    instance: int, instances: int, max_instances: int
) -> None:
    s = DispatchSettings(instance=instance, instances=instances, max_instances=max_instances)
    assert (s.instance, s.instances, s.max_instances) == (instance, instances, max_instances)


def test_settings_defaults_are_one_instance_of_at_most_six() -> None:
    s = DispatchSettings()
    assert (s.instance, s.instances, s.max_instances) == (0, 1, 6)


@pytest.mark.parametrize(
    ("instance", "instances", "max_instances"),
    [
        (1, 1, 6),  # instance == instances
        (3, 2, 6),  # instance > instances
        (0, 7, 6),  # instances > max_instances
        (0, 2, 1),
        (-1, 1, 6),  # negative instance
        (0, 0, 6),  # no instances
        (0, 1, 0),  # max below 1
    ],
)
def test_settings_refuse_out_of_range(instance: int, instances: int, max_instances: int) -> None:
    with pytest.raises(ValidationError):
        DispatchSettings(instance=instance, instances=instances, max_instances=max_instances)


def test_settings_from_the_environment_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_DISPATCH_INSTANCE", "1")
    monkeypatch.setenv("SCHEDULER_DISPATCH_INSTANCES", "2")
    assert DispatchSettings().instance == 1
    monkeypatch.setenv("SCHEDULER_DISPATCH_INSTANCES", "7")  # above the default max of 6
    with pytest.raises(ValidationError):
        DispatchSettings()
    monkeypatch.setenv("SCHEDULER_DISPATCH_MAX_INSTANCES", "8")
    assert DispatchSettings().instances == 7
    monkeypatch.setenv("SCHEDULER_DISPATCH_INSTANCE", "7")
    with pytest.raises(ValidationError):
        DispatchSettings()


# --- the sink, fenced mid-commit ----------------------------------------------------------------


class FencedWhileCommitting(FakeProducer):
    """As seen when a new instance fenced this one during EndTxn: the commit fails with an
    abortable UNKNOWN error, then the abort reports the fence (`abort_error`)."""

    def __init__(self, abort_error: KafkaError) -> None:
        super().__init__()
        self.abort_error = abort_error

    def commit_transaction(self) -> None:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN, "EndTxn commit failed"))

    def abort_transaction(self, timeout: float = -1) -> None:
        self.aborted += 1
        raise KafkaException(self.abort_error)


@pytest.mark.parametrize(
    ("abort_error", "raised"),
    [
        (KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True), FencedError),
        (KafkaError(KafkaError.PRODUCER_FENCED, "producer fenced"), FencedError),
        (KafkaError(KafkaError._FAIL, "fatal", fatal=True), FatalSinkError),
    ],
)
def test_a_fence_reported_by_the_abort_is_a_sink_error(
    abort_error: KafkaError, raised: type[FatalSinkError]
) -> None:
    """Not a bare KafkaException: that one bypassed the stand-down and exited the process, so a
    supervisor would restart the old instance, which would fence the new owners back."""
    p = FencedWhileCommitting(abort_error)
    s, _, _, _ = sink(p)
    s.emit([OutRecord("dest", b"x")], None)

    async def steps() -> None:
        with pytest.raises(raised):
            await s.flush()

    run(s, steps)
    assert p.aborted == 1 and p.committed == []
