"""The short chaos campaign of CI (docs/CHAOS.md): its own private stack, two replicas of each
service, a pinned seed whose first 100 s cut a Cassandra link, kill the broker and freeze the
Cassandra node (and freeze an ingest replica if the recoveries leave room: each fault waits for
the previous one's), under a mixed load. Fails on any violation the checker finds; the report
stays in the test's temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.runner import Options, run
from chaos.stack import CI_PORTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = 19  # plan(19, 100 s, warm-up 10 s): cassandra_cut, kafka_kill, cassandra_pause, pause


@pytest.mark.timeout(1500)  # a loaded 2-core host: services took 3 min to start
def test_short_chaos_campaign_finds_no_violation(tmp_path: Path) -> None:
    options = Options(
        duration_s=100,
        seed=SEED,
        rate=10,
        out=tmp_path / "chaos",
        longest_s=15,
        warmup_s=10,
        ports=CI_PORTS,
    )
    verdict, out = run(options, command="tests/e2e/test_chaos.py")
    print((out / "report.md").read_text())
    kinds = [f.kind for f in verdict.faults]
    assert kinds[:2] == ["cassandra_cut", "kafka_kill"], kinds  # the faults ran
    assert verdict.ok, verdict.violations
    # load went through (a broker restart took 100 s on a loaded host: 164 acknowledged)
    assert verdict.acked > 100, verdict.acked
