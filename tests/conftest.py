import itertools

import pytest

from streams.tools.devbroker import DevBroker

_ids = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real Kafka-protocol broker (Tansu) on a free loopback port for the whole session."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with DevBroker(log) as b:
        yield b


@pytest.fixture
def app_id(request):
    """A fresh consumer group and topic prefix per test: tests share the broker, not state."""
    return f"t{next(_ids)}-{request.node.name[:30].replace('[', '-').replace(']', '')}"
