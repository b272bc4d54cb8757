"""One TLS-only Kafka broker and Cassandra node for the whole session (tls_servers.py)."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.tls.servers import TlsServers, tls_servers
from tests.support.certs import make_pki


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServers]:
    state: Path = tmp_path_factory.mktemp("tls-servers")
    try:
        with tls_servers(state, make_pki(state / "pki")) as servers:
            print(f"[tls servers] both answered {servers.startup_s:.1f} s after the start")
            yield servers
    finally:
        shutil.rmtree(state, ignore_errors=True)  # a Cassandra data dir is not small
