"""Where the system delivers in e2e tests, the demo, the soak runner and the benchmarks: an HTTP
receiver (REST apps) and a read_committed consumer of a KAFKA app's topic. Both record, per
delivery, the message id, the attempt and the receipt time (this host's clock, the one "never
early" is judged by)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer

from scheduler.clock import SystemClock

CLOCK = SystemClock()


@dataclass(frozen=True)
class Arrival:
    message_id: str
    received_ms: int
    attempt: int
    destination: str  # "rest" | "kafka"
    status: int = 204  # what the receiver answered (an HTTP receiver may refuse on purpose)


@dataclass
class Arrivals:
    """Thread-safe list of arrivals."""

    items: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, arrival: Arrival) -> None:
        with self.lock:
            self.items.append(arrival)

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.items)

    def since(self, start: int) -> list[Arrival]:
        """The arrivals after the first `start` (a reader that keeps up without copying all)."""
        with self.lock:
            return self.items[start:]

    def ids(self) -> set[str]:
        with self.lock:
            return {a.message_id for a in self.items}

    def take(self) -> list[Arrival]:
        """The arrivals so far, and forget them (a long benchmark reads them run by run)."""
        with self.lock:
            taken, self.items = self.items, []
            return taken


class HttpReceiver:
    """A minimal asyncio HTTP/1.1 server (keep-alive) in its own thread: records every POST,
    answers 204 (or what `answer(path, message_id)` says: a receiver that fails some deliveries
    on purpose). Fast enough for thousands of deliveries a second."""

    def __init__(self, arrivals: Arrivals, answer: Callable[[str, str], int] | None = None) -> None:
        self.arrivals = arrivals
        self._answer = answer or (lambda _path, _message_id: 204)
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="http-receiver", daemon=True)

    def start(self) -> HttpReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the HTTP receiver did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = CLOCK.now_ms()
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                message_id = headers.get("x-scheduler-message-id", "?")
                path = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else "/"
                status = self._answer(path, message_id)
                self.arrivals.add(
                    Arrival(
                        message_id,
                        received,
                        int(headers.get("x-scheduler-attempt", "0")),
                        "rest",
                        status,
                    )
                )
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the peer closed, or the receiver is closing: connections end with it
        finally:
            writer.close()


class KafkaReceiver:
    """A read_committed consumer of a KAFKA app's destination topic, in its own thread: only
    records of committed transactions count, so an aborted or fenced attempt is not a delivery.
    The message id is taken from the record key (the dispatcher's default key).

    It commits no offsets, so after a rebalance (a broker restart, or this consumer starved past
    its session on a loaded host) it is reset to the earliest offset and reads the partition
    again: a record at an offset already read is that same record read again, not a second
    delivery, and is only counted (`rereads`). A duplicate delivery is another record."""

    def __init__(self, arrivals: Arrivals, bootstrap: str, topic: str) -> None:
        self.arrivals = arrivals
        self.group_id = f"receiver-{uuid.uuid4().hex[:8]}"
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": self.group_id,
                # A read_committed long poll is answered as soon as a transaction commits, so a
                # longer wait does not delay receipt; at 5 ms its 200 fetches a second were most
                # of the broker's load in the suite's idle measurement.
                "fetch.wait.max.ms": 100,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "log_level": 2,  # broker restarts in the fault tests: no reconnect chatter
            }
        )
        self._consumer.subscribe([topic])
        self._stopping = threading.Event()
        self._assigned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-receiver", daemon=True)
        self._read_to: dict[int, int] = {}  # partition -> the highest offset read
        self.rereads = 0

    def start(self) -> KafkaReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(15)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                # A short timeout: the receipt time is taken when poll returns.
                for msg in self._consumer.consume(500, timeout=0.005):
                    received = CLOCK.now_ms()
                    if msg.error() is not None:  # partition EOF, transient broker errors
                        continue
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    if offset <= self._read_to.get(partition, -1):
                        self.rereads += 1
                        continue
                    self._read_to[partition] = offset
                    key = msg.key() or b"?"
                    self.arrivals.add(Arrival(key.decode(), received, 0, "kafka"))
        finally:
            self._consumer.close()
