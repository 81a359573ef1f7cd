"""The click collector, a process of its own (``imref-stream collector``): landing pages' beacons in,
click events out, the click id cookie set from the server. Stateless: no Faust, no table, no
consumer; ``beacon`` (what a beacon stands for), ``ratelimit``, ``server`` (aiohttp + aiokafka)."""
