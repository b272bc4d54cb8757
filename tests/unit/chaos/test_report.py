"""The report's markdown: the verdict, each violation kind, each fault as it ran."""

from __future__ import annotations

import pytest

from chaos.checker import Arrival, FaultSpan, check
from chaos.report import by_kind, markdown

from .test_checker import T0, clean

pytestmark = pytest.mark.unit


def test_a_failing_run_names_the_violation_the_seed_and_each_fault() -> None:
    facts = clean()
    facts.arrivals.append(Arrival("a1", T0 + 5_001, 1, "rest"))
    facts.faults = [FaultSpan("kafka_kill", "kafka", T0 + 1_500, T0 + 4_000)]
    verdict = check(facts)
    meta = {
        "seed": 99,
        "command": "make chaos",
        "duration_s": 60,
        "rate": 5,
        "topology": "single",
        "started_ms": T0,
    }
    timeline = [
        {
            "kind": "kafka_kill",
            "target": "kafka",
            "detail": "",
            "started_ms": T0 + 1_500,
            "healed_ms": T0 + 4_000,
            "error": "",
        }
    ]
    text = markdown(verdict, meta, timeline)
    assert "# Chaos campaign, seed 99" in text
    assert "**FAIL**" in text
    assert "| delivered_after_abort | 1 | a1 |" in text
    assert "| 1.5 | kafka_kill | kafka |  | 4.0 | 20 |" in text
    row = by_kind(verdict)["kafka_kill"]
    assert (row["count"], row["worst_ms"]) == (1, 20)
    assert row["never"] + len(row["steady_ms"]) == 1
    assert "| kafka_kill | 1 | 20 |" in text
