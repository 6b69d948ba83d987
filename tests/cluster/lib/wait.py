"""One way to wait: poll a check until it passes (optionally N times in a row), with a deadline, never a sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a check that has not passed yet (any AssertionError counts the same)."""


def wait_until(
    check: Callable[[], T],
    *,
    what: str,
    timeout: float,
    interval: float = 2.0,
    holds: int = 1,
) -> T:
    """Call ``check`` until it returns a truthy value ``holds`` times in a row (the Ginkgo
    ``MustPassRepeatedly`` idea: a state that flaps is not reached); return its last value.

    A check says "not yet" by returning something falsy or raising :class:`NotYet` / ``AssertionError``; any
    other exception is a real failure and propagates at once. On timeout the last reason is in the error.
    """
    deadline = time.monotonic() + timeout
    streak, last = 0, "never checked"
    while True:
        try:
            value = check()
        except (NotYet, AssertionError) as exc:
            value, last = None, str(exc) or type(exc).__name__
        if value:
            streak += 1
            if streak >= holds:
                return value
        else:
            streak = 0
            if value is not None:
                last = f"returned {value!r}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting until {what} (last: {last})")
        time.sleep(interval)
