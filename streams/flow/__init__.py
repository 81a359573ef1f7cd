"""The worker's per-partition flow (admit, batch, cut, deliver, ack) and its two sources,
conversions and order changes, composed from ``core`` and ``delivery``. Faust-free: topics and
tables are handed in (anything with ``send_soon``, ``get``/``put``)."""
