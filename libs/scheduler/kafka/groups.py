"""The members of consumer groups, asked from a short-lived child process.

librdkafka (2.16 and earlier) can abort the whole process when a request an Admin client sends
to a group coordinator (DescribeConsumerGroups, ListConsumerGroupOffsets) loses its connection:
the error path frees an object that is used again ("rd_kafka_enq_once_del_source_return:
Assertion `eonce->refcnt > 0' failed", upstream confluentinc/librdkafka#5397, unmerged). A
broker restart during the releaser's periodic check of the writer groups killed the releaser.
Asked from a child, the same abort costs one check, which the caller retries later.

Run as a module, it reads {"kafka", "groups", "timeout_s"} as JSON on stdin ("kafka": the
asker's KafkaSettings, secrets included, which stay out of the command line) and prints
{group: [[client id, host]]}.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from scheduler.settings import KafkaSettings

CHILD_COMMAND = [sys.executable, "-m", __name__]
# Python's start and the client's import take about a second on a loaded 2-core host.
CHILD_STARTUP_ALLOWANCE_S = 20.0


@dataclass(frozen=True)
class GroupMember:
    client_id: str
    host: str


class GroupQueryFailed(RuntimeError):
    """The child died (a librdkafka abort), timed out, or reported an error."""


Members = Mapping[str, Sequence[GroupMember]]


def describe_groups(admin: AdminClient, groups: Sequence[str], timeout_s: float) -> Members:
    """The members of each group, asked by `admin` in this process."""
    futures = admin.describe_consumer_groups(list(groups), request_timeout=timeout_s)
    return {
        group: [
            GroupMember(member.client_id or "", member.host or "")
            for member in future.result().members
        ]
        for group, future in futures.items()
    }


def describe_groups_in_child(
    kafka: KafkaSettings, groups: Sequence[str], timeout_s: float = 10.0
) -> Members:
    """`describe_groups` in a child process: its abort or hang raises GroupQueryFailed."""
    request = json.dumps(
        {"kafka": _revealed(kafka), "groups": list(groups), "timeout_s": timeout_s}
    )
    try:
        done = subprocess.run(  # noqa: S603 (our own module, run by our interpreter)
            CHILD_COMMAND,
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout_s + CHILD_STARTUP_ALLOWANCE_S,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed the child
        raise GroupQueryFailed(f"no answer from the group query in {exc.timeout:.0f} s") from exc
    if done.returncode != 0:
        last_lines = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise GroupQueryFailed(f"group query exited with {done.returncode}: {last_lines}")
    answer = json.loads(done.stdout)
    return {
        group: [GroupMember(client_id, host) for client_id, host in members]
        for group, members in answer.items()
    }


def _revealed(kafka: KafkaSettings) -> dict[str, Any]:
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in kafka.model_dump().items()
    }


def main() -> int:
    request = json.load(sys.stdin)
    kafka = KafkaSettings(**request["kafka"])
    # errors only: the child's stderr is the caller's reason when it fails
    admin = AdminClient({**kafka.client_config(), "log_level": 3})
    members = describe_groups(admin, request["groups"], request["timeout_s"])
    json.dump(
        {group: [[m.client_id, m.host] for m in found] for group, found in members.items()},
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
