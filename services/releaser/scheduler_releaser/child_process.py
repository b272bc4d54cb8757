"""A child process of the dispatcher, supervised by a thread of it, and the child's side of it.

The dispatcher runs two: the record writer (dispatcher/writer_runner.py) and the failure
notifier (failures/process.py), each in an interpreter of its own so that its work does not
hold the GIL of the loop that fires messages. Both are supervised the same way:

- spawned (never forked: the dispatcher has threads) with a one-way pipe, child -> parent, on
  which the child reports what it did; the supervisor hands each message to `on_event`;
- restarted after RESTART_PAUSE_S when it exits without being asked to (`restarted` counts it);
- stopped with SIGTERM, then killed when it is not gone within its budget;
- in the child, `child_started`: its logging, a lower CPU priority, and a `ChildStop` that
  says when to stop: on SIGTERM/SIGINT, or when the dispatcher is gone (kill -9), so that the
  child never outlives it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from scheduler.gc_tuning import tune_gc
from scheduler.logs import configure_logging

RESTART_PAUSE_S = 1.0
KILL_WAIT_S = 5.0


class SupervisedChild:
    """`target(*args, conn, parent_pid)` in a child process, kept running until `stop()`.

    The dispatcher's children subclass it (ProcessRecordWriter, ProcessFailureNotifier)."""

    def __init__(
        self,
        what: str,
        name: str,
        target: Callable[..., None],
        args: tuple[object, ...],
        *,
        on_event: Callable[[Any], None],
        restarted: Callable[[], None],
        term_budget_s: float,
        stop_timeout_s: float,
        retry_failed_start: bool,
        log: logging.Logger,
    ) -> None:
        """`what`: how the log lines name it ("record writer"); `name`: the process's name,
        and with "-supervisor" the thread's. `on_event`: each message the child sent (called
        in the supervisor thread). `term_budget_s`: how long the child gets after SIGTERM
        before it is killed; `stop_timeout_s`: how long `stop()` waits for all that by
        default. `retry_failed_start`: when the first spawn fails, `start()` logs it and the
        supervisor tries again after the pause (otherwise `start()` raises)."""
        self._what = what
        self._name = name
        self._target = target
        self._args = args
        self._on_event = on_event
        self._restarted = restarted
        self._term_budget_s = term_budget_s
        self._stop_timeout_s = stop_timeout_s
        self._retry_failed_start = retry_failed_start
        self._logger = log
        self._context = multiprocessing.get_context("spawn")  # never fork a threaded process
        self._stopping = threading.Event()
        self._child: BaseProcess | None = None
        self._conn: Connection | None = None
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"{name}-supervisor", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        try:
            self._spawn()
        except Exception:  # the dispatcher goes on; the supervisor tries again
            if not self._retry_failed_start:
                raise
            self._logger.exception("starting the %s process failed", self._what)
        self._supervisor.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Asks the supervisor to stop the child, and waits up to `timeout_s` for it."""
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(self._stop_timeout_s if timeout_s is None else timeout_s)

    def _spawn(self) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=self._target,
            args=(*self._args, child_conn, os.getpid()),
            name=self._name,
            daemon=False,  # it owns a Kafka consumer: stopped gracefully, not killed
        )
        child.start()
        child_conn.close()  # the child's end, held by the child only (EOF when it exits)
        self._child, self._conn = child, parent_conn
        self._logger.info("%s started as process %s", self._what, child.pid)

    def _exited(self, child: BaseProcess | None) -> bool:
        if child is None:  # the first spawn failed
            return self._retry_failed_start
        return not child.is_alive()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._drain(0.5)
            child = self._child
            if self._exited(child) and not self._stopping.is_set():
                self._logger.error(
                    "%s process %s exited with %s; restarting it in %.0f s",
                    self._what,
                    child.pid if child is not None else "(none)",
                    child.exitcode if child is not None else "no start",
                    RESTART_PAUSE_S,
                )
                self._restarted()
                if self._stopping.wait(RESTART_PAUSE_S):
                    break
                try:
                    self._spawn()
                except Exception:  # e.g. out of processes: try again after the pause
                    self._logger.exception("starting the %s process failed", self._what)
        self._shut_down_child()

    def _drain(self, wait_s: float) -> None:
        """Hands on what the child reported (waits up to `wait_s` for the first message)."""
        conn = self._conn
        if conn is None:
            self._stopping.wait(wait_s)
            return
        try:
            while conn.poll(wait_s):
                self._on_event(conn.recv())
                wait_s = 0
        except (EOFError, OSError):
            self._conn = None  # the child exited; the supervisor notices and restarts it

    def _shut_down_child(self) -> None:
        child = self._child
        if child is None or child.pid is None:
            return
        if child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
            child.join(self._term_budget_s)
            if child.is_alive():
                self._logger.error("%s process %s did not stop; killing it", self._what, child.pid)
                child.kill()
                child.join(KILL_WAIT_S)
        self._drain(0)
        self._logger.info(
            "%s process %s stopped (exit code %s)", self._what, child.pid, child.exitcode
        )


# -- in the child ----------------------------------------------------------------------------


class ChildStop:
    """When the child should stop: asked (SIGTERM/SIGINT), or orphaned."""

    def __init__(self, parent_pid: int) -> None:
        self._parent_pid = parent_pid
        self.asked = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.asked.set())

    def orphaned(self) -> bool:
        """The dispatcher was killed: stop rather than outlive it."""
        return os.getppid() != self._parent_pid

    def __call__(self) -> bool:
        return self.asked.is_set() or self.orphaned()


def child_started(service: str, log_level: str, niceness: int, parent_pid: int) -> ChildStop:
    """The first thing a child does: its logging, its CPU priority, its stop signals."""
    configure_logging(service, log_level)
    tune_gc()
    os.nice(niceness)
    return ChildStop(parent_pid)
