"""K2's log output: one format, on stderr, at the configured level."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("pyiceberg").setLevel(logging.ERROR)  # it logs its own commit retries as warnings
        logging.getLogger("k2.kafka.client").setLevel(logging.CRITICAL + 1)  # librdkafka: every failed reconnect
    else:
        logging.getLogger("k2.kafka.client").setLevel(logging.DEBUG)
