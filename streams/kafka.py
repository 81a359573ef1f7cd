"""The one Kafka client setup: every client (Faust's, the report poller's aiokafka clients,
replay's kafka-python consumer) connects with the same servers, TLS context and SASL login."""
from __future__ import annotations

import ssl

from .config import KafkaSettings


def ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    """Verified TLS (the system CAs, or ``ca_file``) for the SSL protocols; None for PLAINTEXT/SASL_PLAINTEXT."""
    if k.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(cafile=str(k.ca_file) if k.ca_file else None)


def servers(k: KafkaSettings) -> list[str]:
    return [b.split("://", 1)[-1] for b in k.brokers]


def client_options(k: KafkaSettings) -> dict:
    """Keyword arguments that aiokafka and kafka-python clients both take."""
    options = dict(bootstrap_servers=servers(k), security_protocol=k.security_protocol)
    context = ssl_context(k)
    if context is not None:
        options["ssl_context"] = context
    if k.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.username,
                       sasl_plain_password=k.password.reveal().get_secret_value())
    return options
