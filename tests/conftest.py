import itertools

import pytest

from streams.tools.devbroker import BROKER_ENV, DevBroker, broker_kind, free_port
from tests.support.kafkaproxy import KafkaProxy

_ids = itertools.count()


def pytest_addoption(parser):
    parser.addoption("--broker-tests-only", action="store_true",
                     help="only the tests that use the session's broker: a second pass on another broker")


def pytest_configure(config):
    config.addinivalue_line("markers", "broker(capability, reason): runs only on a broker with this capability "
                                       "(an attribute of streams.tools.devbroker.Kind), skipped elsewhere")


def pytest_report_header(config):
    kind = broker_kind()
    return f"broker: {kind.title} ({BROKER_ENV}={kind.name})"


def pytest_collection_modifyitems(config, items):
    kind = broker_kind()
    if config.getoption("--broker-tests-only"):
        others = [item for item in items if not {"broker", "proxied"} & set(item.fixturenames)]
        config.hook.pytest_deselected(items=others)
        items[:] = [item for item in items if item not in others]
    for item in items:
        for mark in item.iter_markers("broker"):
            if not getattr(kind, mark.args[0]):
                item.add_marker(pytest.mark.skip(reason=f"{kind.title}: not {mark.args[0]}; {mark.kwargs['reason']}"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real Kafka-protocol broker (``IMREF_DEV_BROKER``) on a free loopback port for the session."""
    kind = broker_kind()
    with DevBroker(tmp_path_factory.mktemp("broker") / f"{kind.name}.log") as b:
        yield b


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """(broker, proxy): a broker of its own, reached only through the Kafka proxy
    (tests/support/kafkaproxy.py); for tests marked ``broker("advertises_any_port", ...)``."""
    proxy_port = free_port()
    broker = DevBroker(tmp_path_factory.mktemp("proxied") / "broker.log", advertised_port=proxy_port).start()
    proxy = KafkaProxy(broker.port, proxy_port).start()
    try:
        yield broker, proxy
    finally:
        proxy.stop()
        broker.stop()


@pytest.fixture
def app_id(request):
    """A fresh consumer group and topic prefix per test: tests share the broker, not state."""
    return f"t{next(_ids)}-{request.node.name[:30].replace('[', '-').replace(']', '')}"
