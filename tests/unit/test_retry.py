"""The retry policy: steps, jitter, cap, reset."""

import random

import pytest

from bridge.retry import Backoff


def test_steps_then_capped_without_jitter():
    """1, 2, 5, 10 then 10 forever."""
    b = Backoff((1, 2, 5, 10), jitter=0)
    assert [b.next_delay() for _ in range(7)] == [1, 2, 5, 10, 10, 10, 10]
    assert b.exhausted
    assert b.cap == 10


def test_jitter_stays_within_bounds_and_varies():
    """Jittered delays lie in [d(1-j), d(1+j)] and are not all equal."""
    b = Backoff((10,), jitter=0.2, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(200)]
    assert all(8 <= d <= 12 for d in delays)
    assert len(set(delays)) > 100


def test_reset_starts_over():
    """A success resets to the first step."""
    b = Backoff((1, 2), jitter=0)
    b.next_delay()
    b.next_delay()
    b.reset()
    assert b.failures == 0
    assert b.next_delay() == 1


@pytest.mark.parametrize(("steps", "jitter"), [((), 0.1), ((0,), 0.1), ((1,), 1.0), ((1,), -0.1)])
def test_invalid_policies(steps, jitter):
    """Empty or non-positive steps, and jitter outside [0, 1), are refused."""
    with pytest.raises(ValueError):  # noqa: PT011
        Backoff(steps, jitter=jitter)
