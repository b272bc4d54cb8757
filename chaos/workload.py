"""The campaign's steady load: REST and KAFKA apps (and a REST app whose endpoint refuses
deliveries until they are redriven), near-term (ring) and long-horizon (Cassandra buckets)
messages, aborts (some right at the cancel guard), redrives of FAILED messages, idempotency keys
sent twice, through both ingest replicas' HTTP API and the Kafka-native producer.

Only what a client was told is kept (chaos.checker.Facts): a message is in the ledger once it
was answered 200 (or its Kafka-native flush returned). A request without an answer or with a
5xx is retried once on the other replica, as a client would; its messages are not acknowledged
unless the retry is."""

from __future__ import annotations

import heapq
import random
import threading
import uuid
from dataclasses import dataclass, field

import httpx

from chaos.checker import AbortAnswer, Acked
from scheduler.clock import Clock
from scheduler.producer import ScheduleError, SchedulerProducer
from scheduler.settings import KafkaSettings, SchedulingSettings

TICK_S = 0.2
HTTP_SENDERS = 4  # threads sending HTTP requests: one alone keeps ~10 msg/s on a loaded host
PRODUCER_SHARE = 0.2  # of the rate, through the Kafka-native producer
FLAKY_SHARE = 0.03  # of the HTTP messages: to the endpoint that refuses until redriven
ABORT_SHARE = 0.05  # of the HTTP messages: aborted later
KEYED_SHARE = 0.05  # of the HTTP messages: sent alone with an idempotency key, twice
REDRIVE_SHARE = 0.5  # of the FAILED flaky messages
LONGEST_S = 45.0  # the furthest sendAt: the campaign settles for this long after the load


@dataclass(frozen=True)
class AppRef:
    app_id: str
    destination: str  # "rest" | "kafka"
    auth: str  # the Authorization header (data key)
    flaky: bool = False


@dataclass
class Ledger:
    """Everything the clients were told, shared by the workload's threads."""

    acked: list[Acked] = field(default_factory=list)
    aborts: list[AbortAnswer] = field(default_factory=list)
    idempotency: dict[str, set[str]] = field(default_factory=dict)
    redriven: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # answers no client should get
    refused: int = 0  # requests given up after a retry (no answer or 5xx): not acknowledged
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, acked: Acked) -> None:
        with self.lock:
            self.acked.append(acked)


class Pacer:
    """How many to send now for `per_s` on average, whatever the sends took: a loop that sent
    a tick's share and then waited a tick fell short by the time its answers took (about 30 of
    50 msg/s on the cluster). Owed sends beyond `MAX_OWED_S` (an outage: sends that failed or
    waited out their timeout) are dropped, not sent in a burst after it."""

    MAX_OWED_S = 2.0

    def __init__(self, per_s: float, clock: Clock) -> None:
        self._per_s = per_s
        self._clock = clock
        self._started_ms = clock.monotonic_ms()
        self._sent = 0

    def take(self) -> int:
        target = int(self._per_s * (self._clock.monotonic_ms() - self._started_ms) / 1000)
        owed = min(target - self._sent, int(self._per_s * self.MAX_OWED_S) + 1)
        self._sent = target
        return max(0, owed)


@dataclass
class Workload:
    ingest_urls: list[str]
    apps: dict[str, AppRef]  # "rest", "kafka", "flaky"
    kafka: KafkaSettings
    scheduling: SchedulingSettings
    clock: Clock
    rate: float
    seed: int
    healed: set[str]  # flaky message ids the receiver now accepts (shared with it)
    ledger: Ledger = field(default_factory=Ledger)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._abort_queue: list[tuple[int, str, str]] = []  # (at ms, message id, app)
        self._flaky: list[tuple[int, str]] = []  # (look at ms, message id)
        self._queue_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.longest_ms = int(LONGEST_S * 1000)
        # One client, its connections kept alive, for every thread (httpx.Client is thread
        # safe): a client per request (httpx.request) built a TLS context and read the
        # environment each time, and took half a core of the runner at 20 msg/s, CPU the
        # services under test then lacked.
        self._http = httpx.Client(timeout=10.0, trust_env=False)

    # -- lifecycle

    def start(self) -> None:
        loops = [self._http_loop] * HTTP_SENDERS
        for target in (*loops, self._producer_loop, self._abort_loop, self._redrive_loop):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        """Stop scheduling; the abort and redrive loops stop too (pending ones are dropped:
        an abort never sent is not an abort)."""
        self.stop.set()
        for thread in self._threads:
            thread.join(60)
        self._http.close()

    # -- HTTP

    def _post(
        self, app: AppRef, path: str, body: object | None, method: str = "POST"
    ) -> httpx.Response | None:
        """One request to a random ingest replica, retried once on another on no answer or a
        5xx; the last answer, or None."""
        urls = self.ingest_urls[:]
        self.rng.shuffle(urls)
        answer = None
        for url in urls[:2]:
            try:
                answer = self._http.request(
                    method, f"{url}{path}", json=body, headers={"Authorization": app.auth}
                )
            except httpx.HTTPError:
                answer = None
                continue
            if answer.status_code < 500:
                return answer
        return answer

    def _send_at(self, now: int) -> int:
        roll = self.rng.random()
        if roll < 0.05:
            return now - self.rng.randint(0, 2_000)  # past: due at once
        if roll < 0.5:
            return now + self.rng.randint(300, 4_000)  # inside the look-ahead: the ring
        return now + self.rng.randint(6_000, max(6_001, self.longest_ms))  # Cassandra buckets

    def _http_loop(self) -> None:
        pacer = Pacer(self.rate * (1 - PRODUCER_SHARE) / HTTP_SENDERS, self.clock)
        while not self.stop.wait(TICK_S):
            n = pacer.take()
            batches: dict[str, list[int]] = {"rest": [], "kafka": []}
            for _ in range(n):
                now = self.clock.now_ms()
                roll = self.rng.random()
                if roll < FLAKY_SHARE:
                    self._single(self.apps["flaky"], now + self.rng.randint(1_000, 8_000))
                elif roll < FLAKY_SHARE + ABORT_SHARE:
                    self._aborted(self.rng.choice(("rest", "kafka")), now)
                elif roll < FLAKY_SHARE + ABORT_SHARE + KEYED_SHARE:
                    app = self.apps[self.rng.choice(("rest", "kafka"))]
                    self._keyed(app, self._send_at(now))
                else:
                    batches[self.rng.choice(("rest", "kafka"))].append(self._send_at(now))
            for name, send_ats in batches.items():
                if send_ats:
                    self._batch(self.apps[name], send_ats)

    def _batch(self, app: AppRef, send_ats: list[int]) -> None:
        sent = self.clock.now_ms()
        body = {"messages": [{"payload": {"t": t}, "sendAt": t} for t in send_ats]}
        answer = self._post(app, "/messages/batch", body)
        if not self._accepted(answer):
            return
        assert answer is not None
        for item, t in zip(answer.json()["results"], send_ats, strict=True):
            if "scheduledMessageId" in item:
                self.ledger.ack(Acked(item["scheduledMessageId"], app.destination, t, sent))
            else:
                self._error(f"batch item not accepted: {item}")

    def _single(self, app: AppRef, send_at: int, key: str | None = None) -> str | None:
        sent = self.clock.now_ms()
        body: dict[str, object] = {"payload": {"t": send_at}, "sendAt": send_at}
        if key is not None:
            body["idempotencyKey"] = key
        answer = self._post(app, "/messages", body)
        if not self._accepted(answer):
            return None
        assert answer is not None
        message_id = str(answer.json()["scheduledMessageId"])
        self.ledger.ack(Acked(message_id, app.destination, send_at, sent, app.flaky))
        return message_id

    def _keyed(self, app: AppRef, send_at: int) -> None:
        """The same keyed request twice (a client retrying after a lost answer): one message."""
        key = f"k-{uuid.uuid4().hex[:12]}"
        for _ in range(2):
            message_id = self._single(app, send_at, key)
            if message_id is not None:
                with self.ledger.lock:
                    self.ledger.idempotency.setdefault(f"{app.app_id}/{key}", set()).add(message_id)

    def _aborted(self, destination: str, now: int) -> None:
        """A message aborted later: half of them right at the cancel guard (just outside it or
        just inside: 200 or 409 too_late), the others well ahead."""
        send_at = now + self.rng.randint(3_000, 12_000)
        message_id = self._single(self.apps[destination], send_at)
        if message_id is None:
            return
        guard = self.scheduling.cancel_guard_ms
        if self.rng.random() < 0.5:
            at = send_at - guard - self.rng.randint(-150, 300)
        else:
            at = self.clock.now_ms() + self.rng.randint(500, 2_500)
        with self._queue_lock:
            heapq.heappush(self._abort_queue, (at, message_id, destination))

    def _accepted(self, answer: httpx.Response | None) -> bool:
        if answer is None or answer.status_code >= 500:
            with self.ledger.lock:
                self.ledger.refused += 1
            return False
        if answer.status_code == 429:  # a limit: a client backs off; not acknowledged
            with self.ledger.lock:
                self.ledger.refused += 1
            return False
        if answer.status_code != 200:
            self._error(f"{answer.status_code} {answer.text[:200]}")
            return False
        return True

    def _error(self, what: str) -> None:
        with self.ledger.lock:
            self.ledger.errors.append(what)

    # -- aborts and redrives

    def _abort_loop(self) -> None:
        while not self.stop.is_set():
            with self._queue_lock:
                head = self._abort_queue[0] if self._abort_queue else None
            if head is None or head[0] > self.clock.now_ms():
                self.stop.wait(0.01)
                continue
            with self._queue_lock:
                _, message_id, destination = heapq.heappop(self._abort_queue)
            answer = self._post(
                self.apps[destination], f"/messages/{message_id}/abort", None, "PUT"
            )
            status = 0 if answer is None else answer.status_code
            if status not in (0, 200, 409) and status < 500:
                self._error(f"abort {message_id}: {status} {answer.text[:200] if answer else ''}")
            with self.ledger.lock:
                self.ledger.aborts.append(AbortAnswer(message_id, status, self.clock.now_ms()))

    def _redrive_loop(self) -> None:
        flaky = self.apps["flaky"]
        looked: dict[str, int] = {}
        while not self.stop.wait(2.0):
            now = self.clock.now_ms()
            with self.ledger.lock:
                candidates = [
                    a
                    for a in self.ledger.acked
                    if a.flaky and a.send_at_ms + 6_000 < now and a.message_id not in looked
                ]
            for acked in candidates:
                looked[acked.message_id] = now
                if self.rng.random() >= REDRIVE_SHARE:
                    continue  # left FAILED: a terminal state too
                self._redrive(flaky, acked.message_id)

    def _redrive(self, app: AppRef, message_id: str) -> None:
        """Once the message is FAILED (3 refused attempts), accept it and redrive it."""
        for _ in range(10):
            answer = self._post(app, f"/messages/{message_id}", None, "GET")
            ok = answer is not None and answer.status_code == 200
            if ok and answer is not None and answer.json().get("status") == "FAILED":
                break
            if self.stop.wait(2.0):
                return
        else:
            return
        self.healed.add(message_id)
        answer = self._post(app, f"/messages/{message_id}/redrive", None, "PUT")
        if answer is not None and answer.status_code == 200:
            with self.ledger.lock:
                self.ledger.redriven.add(message_id)

    # -- Kafka-native

    def _producer_loop(self) -> None:
        producer = SchedulerProducer(self.kafka, self.scheduling)
        pacer = Pacer(self.rate * PRODUCER_SHARE, self.clock)
        while not self.stop.wait(1.0):
            n = pacer.take()
            sent = self.clock.now_ms()
            planned = []
            for _ in range(n):
                app = self.apps[self.rng.choice(("rest", "kafka"))]
                send_at = self._send_at(sent)
                message_id = producer.schedule(app.app_id, {"t": send_at}, send_at)
                planned.append(Acked(message_id, app.destination, send_at, sent))
            try:
                producer.flush(10.0)
            except ScheduleError:
                # not acknowledged (a client would retry); the producer keeps them queued and
                # may deliver them later: they are simply not in the ledger. A fresh producer
                # per failure would leak one reconnecting producer per second of an outage.
                with self.ledger.lock:
                    self.ledger.refused += 1
                continue
            for acked in planned:
                self.ledger.ack(acked)
