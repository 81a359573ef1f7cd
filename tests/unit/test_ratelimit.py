import pytest

from streams.collector.ratelimit import RateLimits, client_key


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(clock, client=(2.0, 3), everyone=(100.0, 100)) -> RateLimits:
    return RateLimits(*client, *everyone, clock=clock)


def test_a_client_gets_its_burst_then_waits_exactly_until_its_next_token():
    clock = Clock()
    rl = limits(clock)
    assert [rl.check("a") for _ in range(3)] == [None, None, None]
    assert rl.check("a") == ("client", pytest.approx(0.5))
    clock.now += 0.25
    assert rl.check("a") == ("client", pytest.approx(0.25))  # a refusal takes no token
    clock.now += 0.25
    assert rl.check("a") is None
    assert rl.check("a") == ("client", pytest.approx(0.5))


def test_a_client_over_its_limit_does_not_use_up_the_global_share():
    clock = Clock()
    rl = limits(clock, client=(1.0, 3), everyone=(1.0, 5))
    accepted = sum(rl.check("noisy") is None for _ in range(1000))
    assert accepted == 3
    assert rl.check("quiet-1") is None and rl.check("quiet-2") is None
    assert rl.check("quiet-3") == ("global", pytest.approx(1.0))


def test_the_global_limit_holds_whatever_the_number_of_clients():
    clock = Clock()
    rl = limits(clock, client=(1.0, 10), everyone=(10.0, 20))
    accepted = 0
    for second in range(10):
        accepted += sum(rl.check(f"10.0.{second}.{i}") is None for i in range(200))
        clock.now += 1
    assert accepted == 20 + 9 * 10  # the burst, then the rate for the nine seconds that passed


def test_memory_is_bounded_by_the_global_limit_during_a_flood_from_many_addresses():
    clock = Clock()
    rl = limits(clock, client=(1.0, 5), everyone=(100.0, 200))  # a bucket is full again after 5 s
    bound = 2 * (200 + 100 * 5)
    most = 0
    for step in range(600):  # 60 s, 2 000 new addresses every 0.1 s
        for i in range(2000):
            rl.check(f"{step}:{i}")
        most = max(most, len(rl))
        clock.now += 0.1
    assert 0 < most <= bound
    clock.now += 10
    rl.check("late")
    assert len(rl) == 1  # every bucket of the flood was full again and forgotten


def test_client_key_ignores_x_forwarded_for_unless_proxies_are_trusted():
    assert client_key("203.0.113.9", ["198.51.100.1"], 0) == "203.0.113.9"
    # One trusted proxy appends the address it saw; what the client wrote before it is ignored.
    assert client_key("10.1.2.3", ["forged, 198.51.100.1"], 1) == "198.51.100.1"
    assert client_key("10.1.2.3", ["forged", "198.51.100.1, 10.9.9.9"], 2) == "198.51.100.1"
    # Fewer entries than trusted hops: the request did not come through the proxies.
    assert client_key("10.1.2.3", [], 1) == "10.1.2.3"
    assert client_key("10.1.2.3", ["198.51.100.1"], 2) == "10.1.2.3"
    assert client_key(None, [], 0) == ""


def test_client_key_counts_an_ipv6_subscriber_once():
    assert client_key("2001:db8:1:2:aaaa::1", [], 0) == client_key("2001:db8:1:2:bbbb::7", [], 0) == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1", [], 0) != client_key("2001:db8:1:2::1", [], 0)
    assert client_key("::ffff:198.51.100.1", [], 0) == "198.51.100.1"
    assert client_key("10.1.2.3", ["unknown"], 1) == "unknown"
