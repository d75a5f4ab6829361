"""The circuit breaker's states, driven by a fake clock: no stores, no threads, no sleeping."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sources.stores.failures import Breakers, CircuitBreaker, CircuitOpen, StoreDown, store_call


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Client:
    """A store client that answers or refuses to connect, counting the calls that reach it."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    def read(self) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionRefusedError("[Errno 111] Connection refused (127.0.0.1:1)")
        return "row"


def call(client: Client, breakers: Breakers, store: str = "mongo") -> str:
    with store_call(store, breakers):
        return client.read()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_opens_on_a_connection_failure_and_then_fails_without_calling(clock: Clock) -> None:
    breakers, client = Breakers(cooldown_s=2.0, clock=clock), Client()
    assert call(client, breakers) == "row" and breakers["mongo"].state == "closed"
    client.up = False
    with pytest.raises(StoreDown) as first:
        call(client, breakers)
    assert not isinstance(first.value, CircuitOpen) and "refused" in first.value.reason
    assert breakers["mongo"].state == "open" and client.calls == 2
    for _ in range(5):
        clock.now += 0.3
        with pytest.raises(CircuitOpen) as refused:
            call(client, breakers)
        assert str(refused.value) == "the mongo store is unavailable"  # as any StoreDown
        assert "refused" in refused.value.reason  # the last failure, for the log
    assert client.calls == 2  # none of them reached the client
    assert breakers.states() == {"mongo": "open"}


def test_other_stores_and_other_errors_do_not_open_it(clock: Clock) -> None:
    breakers, client = Breakers(clock=clock), Client()
    client.up = False
    with pytest.raises(StoreDown):
        call(client, breakers, "graph")
    client.up = True
    assert call(client, breakers, "mongo") == "row"  # one breaker per store
    with pytest.raises(KeyError), store_call("mongo", breakers):
        raise KeyError("a bug, not an outage")
    assert breakers["mongo"].state == "closed" and breakers["graph"].state == "open"


def test_after_the_cooldown_one_caller_probes_and_its_success_closes(clock: Clock) -> None:
    breakers, client = Breakers(cooldown_s=2.0, clock=clock), Client()
    client.up = False
    with pytest.raises(StoreDown):
        call(client, breakers)
    clock.now += 2.0
    breaker = breakers["mongo"]
    assert breaker.acquire() is True  # this caller is the probe (no ping given)
    assert breaker.state == "half-open"
    with pytest.raises(CircuitOpen):  # the others wait for the probe
        breaker.acquire()
    breaker.succeeded()
    assert breaker.state == "closed"
    client.up = True
    assert call(client, breakers) == "row"


def test_a_failed_probe_opens_it_for_another_cooldown(clock: Clock) -> None:
    breakers, client = Breakers(cooldown_s=2.0, clock=clock), Client()
    client.up = False
    with pytest.raises(StoreDown):
        call(client, breakers)
    clock.now += 2.5
    with pytest.raises(StoreDown) as probe:  # the probe reaches the client, which is still down
        call(client, breakers)
    assert not isinstance(probe.value, CircuitOpen) and client.calls == 2
    clock.now += 1.9
    with pytest.raises(CircuitOpen):
        call(client, breakers)
    assert client.calls == 2
    client.up = True
    clock.now += 0.1
    assert call(client, breakers) == "row" and client.calls == 3  # the next probe succeeds
    assert breakers["mongo"].state == "closed"


def test_a_probe_that_ends_in_another_error_lets_the_next_caller_probe(clock: Clock) -> None:
    breaker = CircuitBreaker("graph", cooldown_s=1.0, clock=clock)
    breaker.failed("refused")
    clock.now += 1.0
    assert breaker.acquire() is True
    breaker.released()  # e.g. the probe's query was refused as bad: nothing learnt about the store
    assert breaker.state == "open"  # still unproven, but not stuck half-open
    breakers = Breakers(cooldown_s=1.0, clock=clock)
    breakers["graph"].failed("refused")
    clock.now += 1.0
    with pytest.raises(ValueError), store_call("graph", breakers):  # this caller is the probe
        raise ValueError("bad query")
    assert breakers["graph"].state == "open"
    assert breakers["graph"].acquire() is True


def test_with_a_ping_the_probe_runs_in_the_background_and_every_caller_fails_fast(clock: Clock) -> None:
    client, started = Client(), []
    client.up = False

    def ping() -> None:
        client.read()

    def run(work: Callable[[], None]) -> None:  # what would run in a thread, kept for the test to run
        started.append(work)

    breakers = Breakers(cooldown_s=2.0, clock=clock, pings={"mongo": ping}, run=run)
    with pytest.raises(StoreDown):
        call(client, breakers)
    clock.now += 2.0
    for _ in range(3):  # the first of these starts the probe; none waits for it
        with pytest.raises(CircuitOpen):
            call(client, breakers)
    assert len(started) == 1 and breakers["mongo"].state == "half-open" and client.calls == 1
    started.pop()()  # the probe: still down
    assert breakers["mongo"].state == "open" and client.calls == 2
    client.up = True
    clock.now += 2.0
    with pytest.raises(CircuitOpen):
        call(client, breakers)
    started.pop()()  # the probe: up again
    assert breakers["mongo"].state == "closed"
    assert call(client, breakers) == "row"


def test_another_calls_failure_keeps_the_probe_out(clock: Clock) -> None:
    started: list[Callable[[], None]] = []
    breakers = Breakers(cooldown_s=1.0, clock=clock, pings={"mongo": lambda: None}, run=started.append)
    breaker = breakers["mongo"]
    breaker.failed("refused")
    clock.now += 1.0
    with pytest.raises(CircuitOpen):
        breaker.acquire()
    breaker.failed("refused again")  # a call that began before the breaker opened
    clock.now += 1.0
    with pytest.raises(CircuitOpen):
        breaker.acquire()
    assert len(started) == 1  # still the one probe
    started.pop()()
    assert breaker.state == "closed"


def test_without_breakers_store_call_only_translates() -> None:
    client = Client()
    client.up = False
    for _ in range(2):
        with pytest.raises(StoreDown) as down:
            call(client, None)  # type: ignore[arg-type]
        assert not isinstance(down.value, CircuitOpen)
    assert client.calls == 2
