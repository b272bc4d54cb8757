"""The shrunk horizons and environment of the e2e tests and the chaos campaign: seconds-scale
buckets, so long-horizon messages go through Cassandra and the releaser within a short run."""

from __future__ import annotations

import json

from scheduler.settings import SchedulingSettings

DEST_PREFIX = "e2edest."

# Seconds-scale horizons, as devservers/local.env but shorter: 1 s buckets, 4 s look-ahead, so
# anything due later than ~5 s goes through Cassandra and the releaser.
SCHEDULING = SchedulingSettings(
    bucket_width_ms=1_000,
    lookahead_ms=4_000,
    placement_margin_ms=1_000,
    ring_size=8,
    ring_slot_ms=2_000,
    cancel_guard_ms=200,
)

EXTRA_ENV = {
    "SCHEDULER_INGEST_KAFKA_ENDPOINT_PREFIXES": json.dumps([DEST_PREFIX]),
    "SCHEDULER_DISPATCH_KAFKA_DESTINATION_PREFIXES": json.dumps([DEST_PREFIX]),
    # The leader lease of a killed releaser expires after this (the broker's minimum is 6 s).
    "SCHEDULER_RELEASE_SESSION_TIMEOUT_MS": "6000",
}
