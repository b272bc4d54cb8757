"""Payload encryption benchmark: what `SCHEDULER_ENCRYPTION_PAYLOADS=true` costs.

    .venv/bin/python bench/encryption_bench.py [--messages 4000] [--runs 3]

1. CPU alone: sealing and opening one payload (AES-256-GCM, scheduler.encryption) at several
   sizes, in microseconds per operation, and the stored size (the envelope is base64 text).
2. Storage: `CassandraMessageStore.save_many` of `--messages` 1 KiB payloads against the local
   Cassandra (a private keyspace, dropped afterwards), without and with payload encryption,
   runs alternated so both see the same background load: messages/s and this process's CPU per
   1,000 messages (the cost lands on ingest and the bucketer, which write, and on the releaser
   and ingest's reads).

Medians of `--runs` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cassandra_ops import private_keyspace
from bench.machine import cpu_model, memory_gib
from scheduler.domain.status import Status
from scheduler.encryption import PLAIN, ColumnCipher, Keyring, cell, new_key
from scheduler.store.cassandra_messages import CassandraMessageStore
from scheduler.store.ports import LogEntry, MessageContent, StatusUpdate

SIZES = (100, 1024, 16 * 1024, 256 * 1024)
T0 = 1_893_499_200_000
ENCRYPTING = ColumnCipher(
    Keyring.parse(json.dumps({"primary": "k1", "keys": {"k1": new_key()}})),
    secrets=True,
    payloads=True,
)


def payload(size: int) -> str:
    return json.dumps({"data": "x" * max(0, size - 11)})


def cpu_figures(size: int) -> tuple[float, float, int]:
    """(µs to seal, µs to open, stored characters) of one payload of `size` bytes."""
    value, aad = payload(size), cell("messages.payload_json", "app", "m")
    n = max(50, 2_000_000 // size)
    started = time.perf_counter()
    sealed = [ENCRYPTING.seal(value, aad) for _ in range(n)]
    seal_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for s in sealed:
        ENCRYPTING.open(s, aad)
    open_us = (time.perf_counter() - started) / n * 1e6
    return seal_us, open_us, len(sealed[0])


def save_run(store: CassandraMessageStore, n: int, run: str) -> tuple[float, float]:
    """(messages/s, client CPU ms per 1,000 messages) of save_many of n 1 KiB payloads."""
    body = payload(1024)
    items = [
        (
            MessageContent("bench-app", f"{run}-{i:08d}", body, T0 + i, T0),
            StatusUpdate(Status.QUEUED, 0, 1, T0 + i, T0),
            LogEntry(T0, "0:1:queued", Status.QUEUED),
        )
        for i in range(n)
    ]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for start in range(0, n, 256):
        store.save_many(items[start : start + 256], per_batch=8)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return n / wall, 1000 * cpu / n * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {memory_gib()} GiB")
    for size in SIZES:
        rows = [cpu_figures(size) for _ in range(args.runs)]
        seal_us = statistics.median(r[0] for r in rows)
        open_us = statistics.median(r[1] for r in rows)
        print(
            f"payload {size:>7,} B: seal {seal_us:8.1f} µs, open {open_us:8.1f} µs,"
            f" stored {rows[0][2]:,} characters (x{rows[0][2] / len(payload(size)):.2f})"
        )
    with private_keyspace(T0) as session:
        stores = {
            "plain": CassandraMessageStore(session),
            "encrypted": CassandraMessageStore(session, ENCRYPTING),
        }
        save_run(CassandraMessageStore(session, PLAIN), 500, "warm")
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "encrypted": []}
        for run in range(args.runs):
            for label, store in stores.items():
                rate, cpu_ms = save_run(store, args.messages, f"{label}{run}")
                results[label].append((rate, cpu_ms))
                print(f"run {run + 1} {label}: {rate:,.0f} messages/s, {cpu_ms:.1f} ms CPU/1,000")
        for label, rows in results.items():
            print(
                f"MEDIANS save_many 1 KiB {label}:"
                f" {statistics.median(r[0] for r in rows):,.0f} messages/s,"
                f" {statistics.median(r[1] for r in rows):.1f} ms CPU per 1,000 messages"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
