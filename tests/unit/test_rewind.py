"""GatedConsumer._rewind: a fetch that Faust would drop (its flow stopped) goes back to its first
offset, unless the partition was sought since (a recovery's seek must win). aiokafka's own
subscription state, a consumer stand-in that seeks it as AIOKafkaConsumer.seek does."""
import asyncio

from aiokafka import TopicPartition
from aiokafka.consumer.subscription_state import SubscriptionState

from streams.runtime.consumer import GatedConsumer

CHANGELOG = [TopicPartition("app-orders-changelog", p) for p in range(3)]


class Consumer:
    def __init__(self):
        self._subscription = SubscriptionState()
        self._subscription.assign_from_user(CHANGELOG)
        self.sought = {}

    def seek(self, tp, offset):
        self._subscription.seek(tp, offset)
        self.sought[tp] = offset


def rewind(positions: dict, fetched: dict) -> dict:
    async def run():
        consumer = Consumer()
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        consumer.sought.clear()
        rewound = await GatedConsumer._rewind(consumer, fetched)
        assert rewound == consumer.sought
        return rewound
    return asyncio.run(run())


def test_a_dropped_fetch_goes_back_to_its_first_offset():
    # The fetch returned offsets 70..96 of partition 0 and 10..11 of partition 1: positions 97 and 12.
    assert rewind({CHANGELOG[0]: 97, CHANGELOG[1]: 12}, {CHANGELOG[0]: (70, 97), CHANGELOG[1]: (10, 12)}) \
        == {CHANGELOG[0]: 70, CHANGELOG[1]: 10}


def test_a_partition_sought_since_keeps_the_newer_position():
    # The recovery sought partition 0 to 73 after the fetch: going back to 70 would undo its seek.
    assert rewind({CHANGELOG[0]: 73, CHANGELOG[1]: 12}, {CHANGELOG[0]: (70, 97), CHANGELOG[1]: (10, 12)}) \
        == {CHANGELOG[1]: 10}


def test_a_partition_without_a_position_or_no_longer_assigned_is_left_alone():
    gone = TopicPartition("app-orders-changelog", 9)
    assert rewind({CHANGELOG[1]: 12}, {CHANGELOG[0]: (70, 97), gone: (5, 6)}) == {}
