"""`scheduler`: the operator command line.

    scheduler setup                                   create the Kafka topics and apply the
                                                      Cassandra migrations (idempotent)
    scheduler admin create-control-key --owner X      an owner's (first) control key: prints the
                                                      key id and its secret, once
    scheduler admin list-owners                       every owner and their active control keys
    scheduler admin list-apps --owner X               the owner's applications
    scheduler admin deactivate-control-key --owner X --key-id ck_...
    scheduler admin index-buckets [--force]           after upgrading to the bucket index: index
                                                      the stored buckets once no writer of the
                                                      previous version runs (the leading releaser
                                                      also does this by itself)
    scheduler admin reencrypt [--dry-run] [--decrypt] encrypt stored secrets (and payloads) under
                                                      the primary key: the backfill after switching
                                                      encryption on, and key rotation (--decrypt:
                                                      back to plain text, before a rollback)

Settings come from the environment (SCHEDULER_*; see README "Settings"). The admin commands need
the secret pepper (SCHEDULER_SECRET_PEPPER) of the ingest gateways, or keys they make will not
authenticate, and the services' keyring (SCHEDULER_ENCRYPTION_*), or they cannot read encrypted
secrets.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from cassandra.cluster import Session
from confluent_kafka.admin import AdminClient

from scheduler.clock import Clock, SystemClock
from scheduler.encryption import ColumnCipher, EncryptionSettings
from scheduler.kafka.admin import ensure_topics
from scheduler.kafka.groups import describe_groups_in_child
from scheduler.logs import configure_logging
from scheduler.security import SecretHasher, SecuritySettings
from scheduler.settings import CassandraSettings, KafkaSettings, SchedulingSettings
from scheduler.store.apps import AppStore, new_control_key
from scheduler.store.bucket_index import backfill, old_writers, writer_groups
from scheduler.store.cassandra import connect
from scheduler.store.cassandra_apps import CassandraAppStore
from scheduler.store.cassandra_buckets import CassandraBucketStore
from scheduler.store.migrate import apply_migrations
from scheduler.store.reencrypt import PLAIN_TEXT, reencrypt
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


# -- admin: owners and control keys ---------------------------------------------------------------


def create_control_key(
    store: AppStore, hasher: SecretHasher, owner_id: str, clock: Clock
) -> tuple[str, str]:
    """Create the owner if needed and a new control key. Returns (key id, secret)."""
    owner_id = owner_id.strip()
    if not owner_id or len(owner_id) > 320:
        raise ValueError("--owner must be 1 to 320 characters")
    now = clock.now_ms()
    store.ensure_owner(owner_id, now)
    secret, key = new_control_key(owner_id, now)
    store.add_control_key(key, hasher.hash(secret))
    return key.key_id, secret


def list_owners(store: AppStore) -> list[str]:
    lines = []
    for owner in store.list_owners():
        active = [k.key_id for k in store.control_keys(owner.owner_id) if k.active]
        lines.append(f"{owner.owner_id}\tactive control keys: {', '.join(active) or '-'}")
    return lines


class UnknownOwner(LookupError):
    """`--owner` names no owner (a typo, or no control key was ever created for it)."""


def list_apps(store: AppStore, owner_id: str) -> tuple[list[str], str | None]:
    """The owner's applications, one line each, and a note when there are none to list.

    An unknown owner raises UnknownOwner: an empty answer would look like an owner without
    applications."""
    lines = [f"{a.app_id}\t{a.type}\t{a.name}\t{a.endpoint}" for a in store.apps(owner_id)]
    if lines:
        return lines, None
    if owner_id not in {o.owner_id for o in store.list_owners()}:
        raise UnknownOwner(
            f"no owner {owner_id!r} (owners are case-sensitive; see `scheduler admin list-owners`)"
        )
    deleted = len(store.apps(owner_id, include_deleted=True))
    note = f"owner {owner_id!r} has no applications"
    return [], note + (f" ({deleted} deleted)" if deleted else "")


@contextmanager
def _app_store() -> Iterator[AppStore]:
    cassandra, cipher = CassandraSettings(), EncryptionSettings().cipher()
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    try:
        yield CassandraAppStore(session, cipher)
    finally:
        cluster.shutdown()


def _cmd_create_control_key(args: argparse.Namespace) -> int:
    hasher = SecretHasher.from_settings(SecuritySettings())
    with _app_store() as store:
        key_id, secret = create_control_key(store, hasher, args.owner, SystemClock())
    print(f"owner:  {args.owner}")
    print(f"key id: {key_id}")
    print(f"secret: {secret}")
    print("The secret is shown only this once. Use it as: Authorization: Token <secret>")
    return 0


def _cmd_list_owners(_: argparse.Namespace) -> int:
    with _app_store() as store:
        for line in list_owners(store):
            print(line)
    return 0


def _cmd_list_apps(args: argparse.Namespace) -> int:
    with _app_store() as store:
        try:
            lines, note = list_apps(store, args.owner)
        except UnknownOwner as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for line in lines:
        print(line)
    if note is not None:
        print(note, file=sys.stderr)  # stdout stays one application per line, for scripts
    return 0


def _cmd_deactivate_control_key(args: argparse.Namespace) -> int:
    with _app_store() as store:
        if not store.deactivate_control_key(args.owner, args.key_id):
            print(f"error: {args.owner} has no control key {args.key_id}", file=sys.stderr)
            return 1
    print(f"deactivated {args.key_id} (effective on every gateway within its key cache time)")
    return 0


def _cmd_index_buckets(args: argparse.Namespace) -> int:
    kafka, cassandra = KafkaSettings(), CassandraSettings()
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    try:
        buckets = CassandraBucketStore(session)
        if buckets.index_complete():
            print("bucket index already complete: nothing to do")
            return 0
        groups = writer_groups(kafka, args.bucketer_group)
        running = old_writers(describe_groups_in_child(kafka, groups))
        if running and not args.force:
            print("writers of the previous version still run; run this again once the rolling")
            print("update has replaced them (or with --force if they are gone for good):")
            for member in running:
                print(f"  {member}")
            return 1
        result = backfill(buckets, SystemClock().now_ms())
    finally:
        cluster.shutdown()
    print(f"bucket index complete: {result.indexed} bucket(s) indexed")
    if result.below_watermark:
        print(
            f"{result.below_watermark} listed bucket(s) below the watermark were left as they are"
        )
    return 0


def run_reencrypt(
    session: Session, cipher: ColumnCipher, dry_run: bool, decrypt: bool = False
) -> tuple[list[str], int]:
    """Lines to print and the exit code: 1 while a stored value cannot be decrypted."""
    reports = reencrypt(session, cipher, dry_run=dry_run, decrypt=decrypt)
    lines = [report.line(dry_run) for report in reports]
    found: set[str] = set().union(*(report.values for report in reports))
    unreadable = sorted(k for k in found if k.startswith("unreadable"))
    in_use = sorted(k for k in found if k != PLAIN_TEXT and k not in unreadable)
    lines.append(f"keys in use: {', '.join(in_use) or 'none'} (primary: {cipher.primary})")
    if unreadable:
        lines.append(f"{', '.join(unreadable)}: add those keys to the keyring, then run again")
    elif not dry_run and not decrypt:
        lines.append("a key not in use above can be removed from the keyring")
    return lines, 1 if unreadable else 0


def _cmd_reencrypt(args: argparse.Namespace) -> int:
    cassandra, cipher = CassandraSettings(), EncryptionSettings().cipher()
    cluster, session = connect(cassandra, keyspace=cassandra.keyspace)
    try:
        lines, code = run_reencrypt(session, cipher, args.dry_run, args.decrypt)
    finally:
        cluster.shutdown()
    for line in lines:
        print(line)
    return code


def _reencrypt_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be rewritten, change nothing"
    )
    parser.add_argument(
        "--decrypt",
        action="store_true",
        help="write every encrypted value back as plain text (before a rollback to a version"
        " without encryption; SCHEDULER_ENCRYPTION_ENABLED must be off)",
    )


def _index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bucketer-group",
        default="scheduler-bucketer",
        help="the bucketers' consumer group (SCHEDULER_BUCKETER_GROUP_ID)",
    )
    parser.add_argument(
        "--force", action="store_true", help="do not wait for old writers to leave their groups"
    )


def _owner(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--owner", required=True, help="owner id, e.g. alice@example.com")


def _owner_and_key(parser: argparse.ArgumentParser) -> None:
    _owner(parser)
    parser.add_argument("--key-id", required=True, help="the control key id (ck_...)")


Handler = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]


def _no_arguments(_: argparse.ArgumentParser) -> None:
    pass


COMMANDS: dict[str, tuple[str, Handler]] = {
    "setup": ("create topics and apply Cassandra migrations (idempotent)", _cmd_setup),
}

ADMIN_COMMANDS: dict[str, tuple[str, Handler, Arguments]] = {
    "create-control-key": (
        "create an owner's control key; prints id and secret once",
        _cmd_create_control_key,
        _owner,
    ),
    "list-owners": ("list owners and their active control keys", _cmd_list_owners, _no_arguments),
    "list-apps": ("list an owner's applications", _cmd_list_apps, _owner),
    "deactivate-control-key": (
        "deactivate one of an owner's control keys",
        _cmd_deactivate_control_key,
        _owner_and_key,
    ),
    "index-buckets": (
        "complete the bucket index of an upgraded keyspace",
        _cmd_index_buckets,
        _index_options,
    ),
    "reencrypt": (
        "encrypt stored secrets (and payloads) under the primary key (backfill, key rotation)",
        _cmd_reencrypt,
        _reencrypt_options,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, handler) in COMMANDS.items():
        sub.add_parser(name, help=help_text).set_defaults(handler=handler)
    admin = sub.add_parser("admin", help="owners, control keys and applications")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    for name, (help_text, handler, arguments) in ADMIN_COMMANDS.items():
        command = admin_sub.add_parser(name, help=help_text)
        arguments(command)
        command.set_defaults(handler=handler)
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
