"""How long N transactional producers take to become ready when started at once, as the
dispatcher's start fences every possible owner of its ring partitions (scheduler.kafka.
transactions explains the wait this measures).

    .venv/bin/python bench/txn_init_bench.py [--producers 11] [--rounds 3]

Needs the local stack (`make stack-up`). Prints, per round, the wall time until all N are ready
and the slowest one, with `init_transactions` alone and with the metadata request first.
"""

from __future__ import annotations

import argparse
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Producer

from scheduler.kafka.transactions import init_transactions
from scheduler.settings import KafkaSettings


def ready_in(config: dict[str, object], transactional_id: str, metadata_first: bool) -> float:
    started = time.monotonic()
    producer = Producer({**config, "transactional.id": transactional_id})
    if metadata_first:
        init_transactions(producer, 30)
    else:
        producer.init_transactions(30)
    took = time.monotonic() - started
    producer.flush(0)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--producers", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kafka = KafkaSettings()
    config = {**kafka.client_config(), "enable.idempotence": True, "acks": "all"}
    prefix = f"txn-init-bench-{uuid.uuid4().hex[:8]}"  # new ids: nothing to abort first
    for round_ in range(1, args.rounds + 1):
        for label, first in (("init_transactions alone", False), ("metadata first", True)):
            ids = [f"{prefix}-{label[:4]}-{round_}-{i}" for i in range(args.producers)]
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=args.producers) as pool:
                took = list(pool.map(ready_in, [config] * len(ids), ids, [first] * len(ids)))
            print(
                f"round {round_}, {label:24}: {args.producers} ready in "
                f"{time.monotonic() - started:.3f} s, slowest {max(took):.3f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
