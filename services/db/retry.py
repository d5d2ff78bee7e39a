"""Retrying database work through transient failures: a dropped connection, a busy SQLite.

The queue and the workers' store writes share this, so "the database blinked" means the same
thing everywhere: the operation is tried again, with exponential backoff, for a bounded time,
and then the last error is raised. Only idempotent operations may be wrapped (every queue
call and every store write is).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the connection went away, or SQLite was busy."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retry_transient(operation: Callable[[], T], seconds: float) -> T:
    """Run ``operation`` again after transient database errors, for at most ``seconds``."""
    for attempt in Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        stop=stop_after_delay(seconds),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            return operation()
    raise AssertionError("unreachable: tenacity either returns or reraises")
