"""Links the nemesis slows or cuts, as TCP proxies (scheduler.testing.proxy) in a child process.

- `NodeLinks.cassandra(nodes, port)`: one service process's links to the Cassandra nodes, a
  proxy per node, and the address map (SCHEDULER_CASSANDRA_ADDRESS_MAP) that sends the driver
  through them, for the contact points and for the nodes it discovers. A fault hits all of a
  process's links at once: the process loses Cassandra, the nodes keep each other.
- `NodeLinks.broker(listen_port, port)`: every service's link to one Kafka broker on the cluster
  topology: a proxy where the broker's PROXIED listener advertises itself
  (scheduler.testing.topology). A fault hits that broker's clients, not the other brokers.

The proxies run in a child process (this file, run as a script): every byte through them is
the services' traffic, and in the runner's process they shared one GIL with the workload and
the receivers (on the cluster topology the services' Cassandra round trips then waited for the
runner: lateness p99 33 s at 20 msg/s, 2 s with the proxies apart). Commands go down its stdin
a line at a time (`delay S 0|1`, `undelay`, `cut`, `restore`, `close`), each answered `ok`."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path


class NodeLinks:
    def __init__(self, specs: list[tuple[int, str, int]]) -> None:
        """A proxy per (listen port or 0 for a free one, upstream host, upstream port)."""
        self._lock = threading.Lock()  # one command at a time (nemesis and fleet threads)
        self.upstreams = [host for _, host, _ in specs]
        argv = [f"{listen}:{host}:{port}" for listen, host, port in specs]
        self._process = subprocess.Popen(  # noqa: S603 (this file, our own arguments)
            [sys.executable, str(Path(__file__)), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.ports: list[int] = json.loads(self._process.stdout.readline())

    @classmethod
    def cassandra(cls, nodes: list[str], port: int) -> NodeLinks:
        return cls([(0, node, port) for node in nodes])

    @classmethod
    def broker(cls, listen_port: int, port: int) -> NodeLinks:
        return cls([(listen_port, "127.0.0.1", port)])

    @property
    def env(self) -> dict[str, str]:
        """The address map of Cassandra links: each node's address -> its proxy."""
        mapping = {n: f"127.0.0.1:{p}" for n, p in zip(self.upstreams, self.ports, strict=True)}
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
        if self._process.returncode is not None:
            return  # closed already
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            self._call("close")
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


def host(specs: list[str]) -> None:
    """The child: a proxy per spec, then commands from stdin until `close` or EOF."""
    from scheduler.testing.proxy import CuttableProxy

    proxies = []
    for spec in specs:
        listen, upstream_host, upstream_port = spec.split(":")
        proxies.append(CuttableProxy(upstream_host, int(upstream_port), int(listen)))
    print(json.dumps([proxy.port for proxy in proxies]), flush=True)
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
    host(sys.argv[1:])
