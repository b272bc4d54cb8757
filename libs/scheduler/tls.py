"""TLS to Cassandra: the driver's `ssl_context`, built from CassandraSettings.

Kafka needs no such object: librdkafka reads the PEM paths itself (KafkaSettings.client_config).
"""

from __future__ import annotations

import ssl

from scheduler.settings import CassandraSettings


def cassandra_ssl_context(settings: CassandraSettings) -> ssl.SSLContext | None:
    """None without TLS; else a client context that verifies the nodes' chain (against the
    given CA, or the system's) and, unless opted out, their names, and presents the client
    certificate when one is set."""
    if not settings.ssl_enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_ca_location)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The driver passes the node's address as server_hostname only while this is on.
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certificate_location and settings.ssl_key_location:
        password = settings.ssl_key_password
        context.load_cert_chain(
            settings.ssl_certificate_location,
            settings.ssl_key_location,
            password=password.get_secret_value() if password else None,
        )
    return context
