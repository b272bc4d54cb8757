"""`scheduler`: the operator command line.

    scheduler setup      create the Kafka topics and apply the Cassandra migrations (idempotent)

Settings come from the environment (SCHEDULER_*; see README "Settings").
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from confluent_kafka.admin import AdminClient

from scheduler.clock import SystemClock
from scheduler.kafka.admin import ensure_topics
from scheduler.logs import configure_logging
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.cassandra import connect
from scheduler.store.migrate import apply_migrations
from scheduler.topics import Topics

log = logging.getLogger("scheduler.cli")


def setup(
    kafka: KafkaSettings, cassandra: CassandraSettings, scheduling: SchedulingSettings
) -> list[str]:
    """Create what the system needs in Kafka and Cassandra. Returns what changed."""
    admin = AdminClient(kafka.client_config())
    changes = ensure_topics(admin, Topics(kafka, scheduling).specs(), kafka)
    cluster, session = connect(cassandra)
    try:
        changes += apply_migrations(session, cassandra, SystemClock().now_ms())
    finally:
        cluster.shutdown()
    return changes


def _cmd_setup(_: argparse.Namespace) -> int:
    changes = setup(KafkaSettings(), CassandraSettings(), SchedulingSettings())
    for change in changes:
        print(change)
    print(f"setup done: {len(changes)} change(s)" if changes else "setup done: nothing to change")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "setup": ("create topics and apply Cassandra migrations (idempotent)", _cmd_setup),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, handler) in COMMANDS.items():
        sub.add_parser(name, help=help_text).set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("cli", args.log_level)
    try:
        return int(args.handler(args))
    except Exception as exc:
        log.debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
