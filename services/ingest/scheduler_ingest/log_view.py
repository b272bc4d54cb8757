"""A message log entry's `data` in the API's vocabulary, rendered at the edge.

The services write log data in their own words (snake_case, epoch milliseconds, Kafka topic
names: see the writers below); the API answers in its own: camelCase keys, instants as RFC 3339,
durations as `...Ms` numbers, no internal names. Rendering here, on read, means entries stored
by any version render alike: nothing stored is migrated.

What each writer stores (`data` of a LogEntry):
- ingest: scheduled {"sendAt" (RFC 3339), "source"}; aborted {"by", "reason"?}; redriven
  {"generation"}; rescheduled {"rescheduled": {"from", "to"} (RFC 3339), "generation"}
- bucketer: stored {"due_ms", "bucket_ms", "shard"}; queued {"due_ms", "topic"}, and
  "released_meanwhile" when its bucket was released while it was written
- releaser: released {}; aborted {"reason"}
- record writer (dispatcher): {"attempt", "outcome", "http_status"?, "error"?}, and
  "lateness_ms" once SENT; aborted {"reason"}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scheduler.domain.sendat import format_rfc3339_ms

# Stored key -> API key, for the keys whose generic rendering would not say it best.
RENAMED = {
    "due_ms": "dueAt",  # as the message's own `dueAt`
    "bucket_ms": "bucketStart",
    "http_status": "httpStatus",
}
DROPPED = frozenset({"shard"})  # internal placement: means nothing to a client
# Keys ending in _ms that are durations, not instants.
DURATIONS = frozenset({"lateness_ms", "dispatch_delay_ms"})
# A due-minute ring topic ("<prefix>due.<slot>"); any other topic is internal and dropped.
_RING_TOPIC = re.compile(r"due\.(\d+)$")


def render_log_data(data: Mapping[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    for key, value in data.items():
        if key in DROPPED:
            continue
        if key == "topic":
            ring = _RING_TOPIC.search(value) if isinstance(value, str) else None
            if ring is not None:
                rendered["queue"] = f"due-minute {int(ring[1])}"
            continue
        if key in RENAMED:
            name = RENAMED[key]
        elif key.endswith("_ms") and key not in DURATIONS:
            name = _camel(key.removesuffix("_ms")) + "At"
        elif key.endswith("_ms"):
            name = _camel(key.removesuffix("_ms")) + "Ms"
        else:
            name = _camel(key)
        if _is_instant(key) and isinstance(value, int) and not isinstance(value, bool):
            value = format_rfc3339_ms(value)
        rendered[name] = value
    return rendered


def _is_instant(key: str) -> bool:
    return key.endswith("_ms") and key not in DURATIONS


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)
