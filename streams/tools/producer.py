"""Producing click and order-item events the way checkout should (kafka-python).

Both topics are keyed by customer id so the worker's join stays partition-local. Use it as is
from Python services, or as the reference for producers in other languages (the contracts are
the JSON Schemas in ``schemas/``)::

    producer = CheckoutProducer("kafka1:9092")
    producer.click("C-1001", im_ref="QiiWXOVnrQ3SQ", landing_url="https://shop.example/?im_ref=QiiWXOVnrQ3SQ")
    producer.order("O-77", "C-1001", "USD", [{"sku": "A-1", "category": "Tools", "amount": "42.50", "quantity": 1}])
    producer.flush()
"""
from __future__ import annotations

from datetime import datetime, timezone

import orjson
from kafka import KafkaProducer


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CheckoutProducer:
    def __init__(self, bootstrap_servers: str, clicks_topic: str = "imref.clicks",
                 items_topic: str = "imref.order-items", **kafka_options):
        # acks=all: an order item the broker did not fully accept is retried, not lost.
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=10,
                                       **kafka_options)
        self.clicks_topic, self.items_topic = clicks_topic, items_topic

    def click(self, customer_id: str, im_ref: str, occurred_at: str | None = None, **extra):
        event = {"customer_id": customer_id, "im_ref": im_ref, "occurred_at": occurred_at or now_iso(), **extra}
        return self.send(self.clicks_topic, customer_id, orjson.dumps(event))

    def order(self, order_id: str, customer_id: str, currency: str, items: list[dict],
              occurred_at: str | None = None, im_ref: str | None = None, **extra) -> list:
        """One event per item, sent back to back so the items of an order stay together."""
        common = {"order_id": order_id, "customer_id": customer_id, "currency": currency,
                  "occurred_at": occurred_at or now_iso(), **extra}
        if im_ref:
            common["im_ref"] = im_ref
        return [self.send(self.items_topic, customer_id, orjson.dumps({**common, **it})) for it in items]

    def send(self, topic: str, customer_id: str, value: bytes):
        return self._producer.send(topic, key=customer_id.encode(), value=value)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()
