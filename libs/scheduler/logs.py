"""Logging for every entry point: one line per event, UTC timestamps, service name first."""

from __future__ import annotations

import logging
import sys
import time


def configure_logging(service: str, level: str = "INFO") -> None:
    formatter = logging.Formatter(
        fmt=f"%(asctime)s.%(msecs)03dZ %(levelname)s {service} %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("cassandra", "kafka", "aiokafka", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

    batch_log = logging.getLogger("cassandra.protocol")
    if not any(isinstance(f, ExpectedBatchWarnings) for f in batch_log.filters):
        batch_log.addFilter(ExpectedBatchWarnings())


class ExpectedBatchWarnings(logging.Filter):
    """Cassandra warns about every multi-partition unlogged batch, which the services send on
    purpose (scheduler.store.cassandra_batches; docs/OPERATIONS.md, "Cassandra batch
    thresholds"): drop those two warnings, keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "Unlogged batch covering" in message
            or ("Batch for [" in message and "exceeding specified threshold" in message)
        )
