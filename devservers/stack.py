#!/usr/bin/env python3
"""Local Kafka (KRaft, single node) and Cassandra 5.0 as background JVMs on 127.0.0.1.

Usage: .venv/bin/python devservers/stack.py up|down|status
       .venv/bin/python devservers/stack.py --topology cluster up|down|status|nodes
       .venv/bin/python devservers/stack.py --topology cluster kill-node|start-node|stop-node|
           pause-node|resume-node NAME        (3 brokers, 3 nodes: devservers/cluster.py)

State lives under the git-ignored ``.local/`` of the checkout (``SCHEDULER_STACK_STATE_DIR``):
``kafka/`` and ``cassandra/`` (data + rendered configs), ``logs/<server>.log`` (the previous
run's log is kept as ``<server>.log.1``) and ``run/<server>.pid``. Settings: devservers/README.md.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

from scheduler.testing.stack import (
    HOST,
    StackSettings,
    cassandra_answers,
    kafka_answers,
    wait_cassandra,
    wait_kafka,
)

DEVSERVERS = Path(__file__).resolve().parent
# Any 22-char base64url UUID; fixed so that formatting with --ignore-formatted is idempotent.
KAFKA_CLUSTER_ID = "q1Sh-9_ISia_zwGINzRvyQ"
LOG_TAIL_LINES = 40


class StackError(Exception):
    """A server did not come up; the message carries the tail of its log."""


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


# --- servers --------------------------------------------------------------------------------


class Server:
    """What the launcher needs to know about one server; subclasses fill in the specifics."""

    name: str
    main_class: str
    main_jar_prefix: str
    stop_grace: float
    java_range: tuple[int, int]  # supported major versions, inclusive

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = DEVSERVERS / self.name
        self.lib = self.home / "lib"
        self.data = settings.state_dir / self.name
        self.log = settings.state_dir / "logs" / f"{self.name}.log"
        self.pidfile = settings.state_dir / "run" / f"{self.name}.pid"

    @property
    def address(self) -> str:
        raise NotImplementedError

    @property
    def timeout(self) -> float:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def wait(self, alive: Callable[[], bool]) -> str:
        """Block until the server answers; returns what it said."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Render the configuration into the data dir (and format storage)."""
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def classpath(self) -> str:
        return f"{self.lib}/*"

    def has_jars(self) -> bool:
        return any(self.lib.glob(f"{self.main_jar_prefix}-*.jar"))


class Kafka(Server):
    name = "kafka"
    main_class = "kafka.Kafka"
    main_jar_prefix = "kafka_2.13"
    stop_grace = 30.0
    java_range = (17, 99)  # the 4.x broker needs Java 17 or newer
    cluster_id = KAFKA_CLUSTER_ID
    format_timeout = 60.0  # seconds for the storage format JVM

    @property
    def address(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def timeout(self) -> float:
        return self.settings.kafka_timeout

    @property
    def properties(self) -> Path:
        return self.data / "server.properties"

    def answers(self) -> bool:
        return kafka_answers(self.address)

    def wait(self, alive: Callable[[], bool]) -> str:
        brokers = wait_kafka(self.address, self.timeout, alive)
        return f"{brokers} broker(s)"

    def logging_options(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}"]

    def prepare(self) -> None:
        self.write_properties()
        self.format_storage()

    def write_properties(self) -> None:
        render(
            self.home / "server.properties.tmpl",
            self.properties,
            DATA=str(self.data),
            KAFKA_PORT=str(self.settings.kafka_port),
            CONTROLLER_PORT=str(self.settings.kafka_controller_port),
        )

    def format_storage(self) -> None:
        if (self.data / "kraft-combined-logs" / "meta.properties").exists():
            return  # formatted before; saves a JVM start (format --ignore-formatted is a no-op)
        started = time.monotonic()
        format_storage = [
            self.settings.java,
            "-Xmx256m",
            *self.logging_options(),
            "-cp",
            self.classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(self.properties),
            "--ignore-formatted",
        ]
        with self.log.open("ab") as log:
            done = subprocess.run(
                format_storage, stdout=log, stderr=subprocess.STDOUT, timeout=self.format_timeout
            )
        if done.returncode != 0:
            raise StackError(f"{self.name}: storage format failed\n{log_tail(self.log)}")
        say(f"{self.name}: storage formatted in {time.monotonic() - started:.1f} s")

    def command(self) -> list[str]:
        heap = self.settings.kafka_heap
        return [
            self.settings.java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            # kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:MaxInlineLevel=15",
            "-Djava.awt.headless=true",
            f"-XX:HeapDumpPath={self.log.parent}",
            *self.logging_options(),
            "-cp",
            self.classpath(),
            self.main_class,
            str(self.properties),
        ]


class Cassandra(Server):
    name = "cassandra"
    main_class = "org.apache.cassandra.service.CassandraDaemon"
    main_jar_prefix = "cassandra-all"
    stop_grace = 30.0
    java_range = (11, 17)  # Cassandra 5.0 refuses newer JDKs (SecurityManager is gone)

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        return f"{self.host}:{self.settings.cassandra_port}"

    @property
    def timeout(self) -> float:
        return self.settings.cassandra_timeout

    @property
    def conf(self) -> Path:
        return self.data / "conf"

    def answers(self) -> bool:
        return cassandra_answers(self.host, self.settings.cassandra_port)

    def wait(self, alive: Callable[[], bool]) -> str:
        version = wait_cassandra(self.host, self.settings.cassandra_port, self.timeout, alive)
        return f"release_version {version}"

    def prepare(self) -> None:
        for folder in ("tmp", "triggers"):  # JNA's unpack dir; an empty triggers dir (else WARN)
            (self.data / folder).mkdir(parents=True, exist_ok=True)
        render(
            self.home / "cassandra.yaml.tmpl",
            self.conf / "cassandra.yaml",
            DATA=str(self.data),
            CQL_PORT=str(self.settings.cassandra_port),
            STORAGE_PORT=str(self.settings.cassandra_storage_port),
        )

    def node_options(self) -> list[str]:
        """JVM options of one node of a cluster (devservers/cluster.py); none for the single."""
        return []

    def command(self) -> list[str]:
        heap = self.settings.cassandra_heap
        jamm = sorted(self.lib.glob("jamm-*.jar"))
        return [
            self.settings.java,
            f"@{self.home / 'jvm17.options'}",
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *(f"-javaagent:{jar}" for jar in jamm[-1:]),
            f"-XX:HeapDumpPath={self.log.parent}",
            f"-Djna.tmpdir={self.data / 'tmp'}",
            f"-Dcassandra.triggers_dir={self.data / 'triggers'}",
            f"-Dcassandra.config=file://{self.conf / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.data}",
            f"-Dcassandra.logdir={self.log.parent}",
            f"-Dlogback.configurationFile={self.home / 'logback.xml'}",
            *self.node_options(),
            "-cp",
            f"{self.conf}:{self.classpath()}",
            self.main_class,
        ]


def servers(settings: StackSettings) -> list[Server]:
    # Cassandra first: it is the slower one, so it gets going while Kafka formats its storage.
    return [Cassandra(settings), Kafka(settings)]


# --- files and processes --------------------------------------------------------------------


def render(template: Path, target: Path, **values: str) -> None:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def log_tail(log: Path, lines: int = LOG_TAIL_LINES, width: int = 300) -> str:
    if not log.exists():
        return f"(no log at {log})"
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    shortened = (line if len(line) <= width else line[:width] + " [...]" for line in tail)
    return f"--- last {len(tail)} lines of {log} ---\n" + "\n".join(shortened)


def rotate_log(log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))


def java_major(java: str) -> int | None:
    """Major version from the JDK's ``release`` file (no JVM start), None if unknown."""
    release = Path(java).resolve().parent.parent / "release"
    try:
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return int(line.split("=", 1)[1].strip('"').split(".")[0])
    except (OSError, ValueError):
        pass
    return None


def check_java(server: Server) -> None:
    java = server.settings.java
    if not Path(java).is_file():
        raise StackError(f"{server.name}: no Java at {java}; set SCHEDULER_STACK_JAVA")
    major = java_major(java)
    low, high = server.java_range
    if major is not None and not low <= major <= high:
        raise StackError(f"{server.name}: {java} is Java {major}; needs {low} to {high}")


def is_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_ours(server: Server, pid: int) -> bool:
    """The JVM runs this server's main class on this checkout's data dir."""
    args = cmdline(pid)
    return server.main_class in args and any(str(server.data) in arg for arg in args)


def read_pidfile(server: Server) -> int | None:
    try:
        return int(server.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def find_pids(server: Server) -> list[int]:
    """Live JVMs of this server, found in /proc by main class and data dir (so a lost or stale
    pid file cannot hide one)."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return sorted(pid for pid in pids if is_alive(pid) and is_ours(server, pid))


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def spawn(server: Server) -> subprocess.Popen[bytes]:
    """Start the JVM in its own session, detached from this process, output to its log."""
    with server.log.open("ab") as log:
        process = subprocess.Popen(
            server.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=server.data,
            start_new_session=True,
        )
    server.pidfile.parent.mkdir(parents=True, exist_ok=True)
    server.pidfile.write_text(f"{process.pid}\n")
    return process


def terminate(pids: list[int], grace: float) -> str:
    """SIGTERM, then SIGKILL whatever still runs after ``grace`` seconds; says which it took."""
    signal_all(pids, signal.SIGTERM)
    if wait_gone(pids, grace):
        return "SIGTERM"
    signal_all(pids, signal.SIGKILL)
    if not wait_gone(pids, 10.0):
        raise StackError(f"pids {pids} survived SIGKILL")
    return f"SIGKILL after {grace:.0f} s"


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signum)


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(is_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def fetch_jars(server: Server) -> None:
    """Resolve the server's jars from Maven Central once (skipped if the main jar is there)."""
    if server.has_jars():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"{server.name}: no jars in {server.lib} and no `mvn` on PATH")
    say(f"{server.name}: fetching jars with Maven (once) ...")
    started = time.monotonic()
    pom = server.home / "pom.xml"
    subprocess.run([mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies"], check=True)
    if not server.has_jars():
        raise StackError(f"{server.name}: Maven ran but {server.main_jar_prefix}-*.jar is missing")
    jars = len(list(server.lib.glob("*.jar")))
    say(f"{server.name}: {jars} jars fetched in {time.monotonic() - started:.1f} s")


@contextmanager
def stack_lock(settings: StackSettings) -> Iterator[None]:
    """Serialise concurrent up/down calls (e.g. several test sessions starting the stack)."""
    lock = settings.state_dir / "run" / "stack.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- commands -------------------------------------------------------------------------------


def up_one(server: Server) -> str:
    """Make one server answer; returns a one-line report of what it took."""
    started = time.monotonic()
    pids = find_pids(server)
    if server.answers():
        owner = f"pid {pids[0]}" if pids else "not started by this checkout"
        return f"already answering on {server.address} ({owner}); started nothing"
    if pids:
        say(f"{server.name}: pid {pids[0]} runs but does not answer yet; waiting for it")
        detail = wait_or_fail(server, lambda: is_alive(pids[0]), started_here=False)
        return f"pid {pids[0]} answered ({detail}) after {time.monotonic() - started:.1f} s"
    if server.pidfile.exists():
        say(f"{server.name}: pid file {read_pidfile(server)} is stale (process gone); restarting")
        server.pidfile.unlink()
    check_java(server)
    rotate_log(server.log)
    server.data.mkdir(parents=True, exist_ok=True)
    server.prepare()
    process = spawn(server)
    say(f"{server.name}: started pid {process.pid}, log {server.log}")
    detail = wait_or_fail(server, lambda: process.poll() is None, started_here=True)
    elapsed = time.monotonic() - started
    return f"started pid {process.pid}; answering ({detail}) after {elapsed:.1f} s"


def wait_or_fail(server: Server, alive: Callable[[], bool], started_here: bool) -> str:
    try:
        return server.wait(alive)
    except (TimeoutError, RuntimeError) as exc:
        if started_here:  # leave no half-started JVM behind
            stop_one(server)
        raise StackError(f"{server.name}: {exc}\n{log_tail(server.log)}") from exc


def stop_one(server: Server) -> str:
    pids = find_pids(server)
    started = time.monotonic()
    how = terminate(pids, server.stop_grace) if pids else ""
    server.pidfile.unlink(missing_ok=True)
    if not pids:
        return "not running"
    return f"stopped pid {', '.join(map(str, pids))} ({how}) in {time.monotonic() - started:.1f} s"


def status_one(server: Server) -> str:
    pids = find_pids(server)
    stale = " (stale pid file)" if server.pidfile.exists() and not pids else ""
    running = f"running, pid {', '.join(map(str, pids))}" if pids else "not running"
    rss = [rss_mib(pid) for pid in pids]
    memory = ", ".join(f"RSS {mib:.0f} MiB" for mib in rss if mib is not None)
    answering = "answering" if server.answers() else "not answering"
    return f"{running}{stale}; {answering} on {server.address}" + (f"; {memory}" if memory else "")


def for_each(action: Callable[[Server], str], settings: StackSettings) -> int:
    """Run ``action`` on both servers in parallel; print one line each; 1 if any failed."""
    todo = servers(settings)
    failed = False
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        futures = [(server, pool.submit(action, server)) for server in todo]
        for server, future in futures:
            try:
                say(f"{server.name}: {future.result()}")
            except (StackError, subprocess.SubprocessError, OSError) as exc:
                say(f"{server.name}: FAILED: {exc}")
                failed = True
    return 1 if failed else 0


def up(settings: StackSettings) -> int:
    with stack_lock(settings):
        try:
            for server in servers(settings):  # sequential: two mvn runs sharing ~/.m2 can race
                fetch_jars(server)
        except (StackError, subprocess.CalledProcessError) as exc:
            say(f"FAILED: {exc}")
            return 1
        return for_each(up_one, settings)


def down(settings: StackSettings) -> int:
    with stack_lock(settings):
        return for_each(stop_one, settings)


def status(settings: StackSettings) -> int:
    return for_each(status_one, settings)


NODE_COMMANDS = ["nodes", "kill-node", "start-node", "stop-node", "pause-node", "resume-node"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--topology",
        choices=["single", "cluster"],
        default="single",
        help="cluster: 3 Kafka + 3 Cassandra nodes (devservers/cluster.py)",
    )
    parser.add_argument("command", choices=["up", "down", "status", *NODE_COMMANDS])
    parser.add_argument("node", nargs="?", help="the node of a *-node command (cluster only)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.topology == "cluster":
        import cluster  # here: cluster.py imports this module

        rc = cluster.run(args.command, args.node)
    elif args.command in NODE_COMMANDS:
        parser.error(f"{args.command} needs --topology cluster")
    else:
        command = {"up": up, "down": down, "status": status}[args.command]
        rc = command(StackSettings.from_env())
    say(f"{args.command}: {'ok' if rc == 0 else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
