"""`make chaos` options: the warm-up's default follows the topology (the cluster's JVMs start
cold), and an explicit one wins."""

from __future__ import annotations

import pytest

from chaos.runner import WARMUP_S, parse

pytestmark = pytest.mark.unit


def test_the_warm_up_default_follows_the_topology() -> None:
    assert parse(["--seed", "1"]).warmup_s == WARMUP_S["single"] == 15.0
    assert parse(["--topology", "cluster", "--seed", "1"]).warmup_s == WARMUP_S["cluster"]
    assert WARMUP_S["cluster"] >= 150  # the cluster's lateness took ~150 s to settle


def test_an_explicit_warm_up_wins() -> None:
    assert parse(["--topology", "cluster", "--warmup-s", "30", "--seed", "1"]).warmup_s == 30
