"""One service process's links to the Cassandra nodes: a TCP proxy per node
(scheduler.testing.proxy), and the address map (SCHEDULER_CASSANDRA_ADDRESS_MAP) that sends the
driver through them, for the contact points and for the nodes it discovers. The nemesis slows
or cuts all of a process's links at once: the process loses Cassandra, the nodes keep each other.

The proxies run in a child process of their own (this file, run as a script): every Cassandra
byte of the service goes through them, and in the runner's process they shared one GIL with the
workload and the receivers (on the cluster topology the runner then took half a core, and the
services' Cassandra round trips waited for it). Commands go down its stdin a line at a time
(`delay S 0|1`, `undelay`, `cut`, `restore`, `close`); each is answered `ok` on stdout."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

START_TIMEOUT_S = 30.0


class NodeLinks:
    def __init__(self, nodes: list[str], port: int) -> None:
        self._lock = threading.Lock()  # one command at a time (nemesis and fleet threads)
        self._process = subprocess.Popen(  # noqa: S603 (this file, our own arguments)
            [sys.executable, str(Path(__file__)), str(port), *nodes],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.ports: dict[str, int] = json.loads(self._process.stdout.readline())

    @property
    def env(self) -> dict[str, str]:
        mapping = {node: f"127.0.0.1:{port}" for node, port in self.ports.items()}
        return {"SCHEDULER_CASSANDRA_ADDRESS_MAP": json.dumps(mapping)}

    def _call(self, command: str) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
            answer = self._process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"link host: {command!r} answered {answer!r}")

    def delay(self, seconds: float, *, replies: bool = False) -> None:
        self._call(f"delay {seconds} {int(replies)}")

    def undelay(self) -> None:
        self._call("undelay")

    def cut(self) -> None:
        self._call("cut")

    def restore(self) -> None:
        self._call("restore")

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._call("close")
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


def host(port: int, nodes: list[str]) -> None:
    """The child: a proxy per node, then commands from stdin until `close` or EOF."""
    from scheduler.testing.proxy import CuttableProxy

    proxies = [CuttableProxy(node, port) for node in nodes]
    print(json.dumps({n: p.port for n, p in zip(nodes, proxies, strict=True)}), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        for proxy in proxies:
            if command == "delay":
                proxy.delay(float(args[0]), replies=args[1] == "1")
            else:
                getattr(proxy, command)()
        print("ok", flush=True)
        if command == "close":
            return
    for proxy in proxies:  # the runner is gone
        proxy.close()


if __name__ == "__main__":
    host(int(sys.argv[1]), sys.argv[2:])
