from __future__ import annotations

import random

import pytest

from distill.core.config import parse_endpoint
from distill.core.errors import ConfigError
from distill.job.health import DOWN, UP, EndpointHealth


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock | None = None, *, down_after: int = 3, probe_min: float = 2.0, probe_max: float = 60.0,
         seed: int = 1) -> EndpointHealth:
    return EndpointHealth(down_after=down_after, probe_min_s=probe_min, probe_max_s=probe_max,
                          clock=clock or FakeClock(), rng=random.Random(seed))


def test_the_endpoint_goes_down_at_the_threshold_of_failures_in_a_row_and_not_before() -> None:
    clock = FakeClock()
    health = make(clock, down_after=3)
    assert health.failed("HTTP 503") is False and health.failed("HTTP 503") is False
    assert health.up and health.to_dict()["health"] == UP
    clock.now = 1010.0
    assert health.failed("connection failed (ConnectionRefusedError)") is True
    assert health.state == DOWN and health.since == 1010.0
    assert health.to_dict() == {"health": DOWN, "health_since": 1010.0, "failures_in_a_row": 3,
                                "down_reason": "connection failed (ConnectionRefusedError)"}
    assert health.failed("HTTP 500") is False  # already down: no second transition, the reason is the latest
    assert health.last_error == "HTTP 500" and health.since == 1010.0


def test_a_success_between_failures_resets_the_count() -> None:
    health = make(down_after=3)
    health.failed("HTTP 502")
    health.failed("HTTP 502")
    assert health.succeeded() is None  # it was up: nothing came back
    health.failed("HTTP 502")
    health.failed("HTTP 502")
    assert health.up  # two in a row since the success, not four
    assert health.failed("HTTP 502") is True


def test_a_batch_of_failed_attempts_counts_each_attempt() -> None:
    health = make(down_after=3)
    assert health.failed("endpoint failed 5 attempt(s)", count=5) is True
    assert health.failures == 5


def test_a_success_brings_a_down_endpoint_up_and_says_for_how_long_it_was_down() -> None:
    clock = FakeClock()
    health = make(clock, down_after=1)
    health.failed("HTTP 500")
    health.probe_failed("HTTP 500")
    clock.now += 42.5
    assert health.succeeded() == pytest.approx(42.5)
    assert health.up and health.since == clock.now and health.failures == 0 and health.probes == 0
    assert health.to_dict()["down_reason"] == ""


def test_the_probe_ceiling_doubles_per_failed_probe_and_stops_at_the_cap() -> None:
    health = make(down_after=1, probe_min=2.0, probe_max=60.0)
    health.failed("refused")
    ceilings = []
    for _ in range(8):
        ceilings.append(health.probe_ceiling())
        health.probe_failed("refused")
    assert ceilings == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    for _ in range(200):  # no overflow however long the outage lasts
        health.probe_failed("refused")
    assert health.probe_ceiling() == 60.0


@pytest.mark.parametrize("failed_probes", [0, 1, 3, 5, 9])
def test_every_probe_delay_lies_in_the_upper_half_of_its_ceiling_and_within_min_and_max(failed_probes: int) -> None:
    health = make(down_after=1, probe_min=2.0, probe_max=60.0, seed=failed_probes)
    health.failed("refused")
    for _ in range(failed_probes):
        health.probe_failed("refused")
    ceiling = health.probe_ceiling()
    delays = [health.next_probe_delay() for _ in range(500)]
    assert all(max(2.0, ceiling / 2) <= d <= ceiling for d in delays)
    assert all(2.0 <= d <= 60.0 for d in delays)
    if ceiling > 2.0:  # jittered: the draws spread over the band rather than repeat one value
        assert max(delays) - min(delays) > ceiling / 4


def test_the_first_probe_waits_exactly_probe_min() -> None:
    health = make(down_after=1, probe_min=0.5, probe_max=4.0)
    health.failed("refused")
    assert {health.next_probe_delay() for _ in range(50)} == {0.5}


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EndpointHealth(down_after=0)
    with pytest.raises(ValueError):
        EndpointHealth(probe_min_s=5.0, probe_max_s=1.0)


def test_probe_settings_come_from_the_endpoint_config_with_defaults() -> None:
    plain = parse_endpoint("api_1", {})
    assert (plain.down_after, plain.probe_min_s, plain.probe_max_s) == (3, 2.0, 60.0)
    tuned = parse_endpoint("api_2", {"down_after": 1, "probe_min": 0.25, "probe_max": 1.5})
    health = EndpointHealth.for_endpoint(tuned)
    assert (health.down_after, health.probe_min_s, health.probe_max_s) == (1, 0.25, 1.5)


@pytest.mark.parametrize(("entry", "named"), [
    ({"down_after": 0}, "MULTI_API_CONFIG['api_3']['down_after']"),
    ({"probe_min": "soon"}, "MULTI_API_CONFIG['api_3']['probe_min']"),
    ({"probe_min": 10, "probe_max": 5}, "MULTI_API_CONFIG['api_3']['probe_max'] must be at least"),
])
def test_a_bad_probe_setting_is_one_error_naming_it(entry: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_endpoint("api_3", entry)
    assert named in str(caught.value) and "\n" not in str(caught.value)
