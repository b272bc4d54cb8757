"""Correct the drift of an application's pending count from its message records.

    python -m scheduler_ingest.recount --app <appId> [--app ...] [--dry-run]

The pending count (`usage_pending`) is an approximate counter (services/ingest/README.md,
"Pending cap"). This operator command counts the app's records that are not terminal (READY,
QUEUED) by paging through its message listing, and adds the difference to the counter. It reads
every record of the app, so it is for the occasional correction, not for the request path.

Messages accepted or finished while it pages are the only error left: the correction is exact
for a quiet app and off by the changes made during the scan otherwise. Run it in an ingest pod
(same SCHEDULER_CASSANDRA_* settings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.encryption import EncryptionSettings
from scheduler.settings import CassandraSettings
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import MessageStore
from scheduler.store.usage import CassandraUsageStore, UsageStore

PAGE = 500


@dataclass(frozen=True)
class Recount:
    app_id: str
    counted: int  # the counter before
    pending: int  # non-terminal records found

    @property
    def correction(self) -> int:
        return self.pending - self.counted


def recount_pending(
    messages: MessageStore,
    usage: UsageStore,
    app_id: str,
    *,
    dry_run: bool = False,
    page_size: int = PAGE,
) -> Recount:
    counted = usage.pending(app_id)
    pending, cursor = 0, None
    while True:
        page = messages.list(app_id, None, cursor, page_size)
        pending += sum(1 for view in page.items if not view.state.status.terminal)
        cursor = page.next_cursor
        if cursor is None:
            break
    result = Recount(app_id, counted, pending)
    if not dry_run:
        usage.add_pending(app_id, result.correction)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler_ingest.recount", description=__doc__)
    parser.add_argument("--app", action="append", required=True, help="application id")
    parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    args = parser.parse_args(argv)
    settings, cipher = CassandraSettings(), EncryptionSettings().cipher()
    cluster, session = connect(settings, keyspace=settings.keyspace)
    try:
        messages, usage = CassandraMessageStore(session, cipher), CassandraUsageStore(session)
        for app_id in args.app:
            r = recount_pending(messages, usage, app_id, dry_run=args.dry_run)
            verb = "would correct" if args.dry_run else "corrected"
            print(f"{app_id}: counter {r.counted}, records pending {r.pending}:", end=" ")
            print(f"{verb} by {r.correction:+d}")
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
