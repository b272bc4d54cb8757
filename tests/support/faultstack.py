"""A private Kafka + Cassandra for tests that stop or restart a server: other ports and another
state dir than the shared stack (9092/9042), so other engineers' tests never see the fault.
Driven by the same launcher as the shared stack (devservers/stack.py) through SCHEDULER_STACK_*."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scheduler.testing.stack import StackSettings, find_repo

UP_TIMEOUT_S = 300.0


@dataclass
class PrivateStack:
    kafka_port: int = 29092
    kafka_controller_port: int = 29093
    cassandra_port: int = 29042
    cassandra_storage_port: int = 27000
    state_dir: Path = find_repo() / ".local" / "fault-stack"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_STACK_")}
        env.update(
            {
                "SCHEDULER_STACK_STATE_DIR": str(self.state_dir),
                "SCHEDULER_STACK_KAFKA_PORT": str(self.kafka_port),
                "SCHEDULER_STACK_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
                "SCHEDULER_STACK_CASSANDRA_PORT": str(self.cassandra_port),
                "SCHEDULER_STACK_CASSANDRA_STORAGE_PORT": str(self.cassandra_storage_port),
                # a small box: the fault stack runs next to the shared one
                "SCHEDULER_STACK_CASSANDRA_HEAP": "512M",
                "SCHEDULER_STACK_KAFKA_HEAP": "384m",
            }
        )
        return env

    @property
    def settings(self) -> StackSettings:
        return StackSettings.from_env(self.env)

    @property
    def kafka_bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    def _launcher(self, command: str) -> None:
        repo = find_repo()
        subprocess.run(
            [sys.executable, str(repo / "devservers" / "stack.py"), command],
            env=self.env,
            cwd=repo,
            check=True,
            timeout=UP_TIMEOUT_S,
        )

    def up(self) -> None:
        """Start whatever is not running (idempotent) and wait until both answer."""
        self._launcher("up")

    def down(self) -> None:
        self._launcher("down")

    def pid(self, server: str) -> int:
        return int((self.state_dir / "run" / f"{server}.pid").read_text().strip())

    def freeze(self, server: str, timeout_s: float = 10) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung broker). Returns
        once every thread of the JVM is seen stopped: the signal takes effect asynchronously,
        and a request sent just after `os.kill` was once still answered (CI, loaded host)."""
        pid = self.pid(server)
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout_s
        while not all_threads_stopped(pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server} (pid {pid}) not stopped {timeout_s} s after SIGSTOP")
            time.sleep(0.01)

    def thaw(self, server: str) -> None:
        """SIGCONT after `freeze`: the server answers again."""
        os.kill(self.pid(server), signal.SIGCONT)

    def stop(
        self, server: str, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60
    ) -> None:
        """Stop one server ("kafka" or "cassandra") with `sig` and wait until it is gone."""
        pid = self.pid(server)
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Runs (a zombie, not yet reaped by its parent, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` in state T (stopped), from /proc."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            # the state follows the parenthesised command name, which may contain spaces
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
    return bool(states) and all(state in ("T", "t") for state in states)
