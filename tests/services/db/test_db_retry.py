"""Retrying through transient database errors (shared by the queue and the workers)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from circuitreg.services.db.retry import is_transient, retry_transient


def _dropped() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_transient_errors_are_retried_until_the_operation_succeeds() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _dropped()
        return "written"

    assert retry_transient(flaky, seconds=10) == "written"
    assert len(calls) == 3


def test_other_errors_are_raised_at_once() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        retry_transient(broken, seconds=10)
    assert len(calls) == 1
    assert not is_transient(ValueError("bad input"))


def test_a_database_that_stays_down_raises_its_last_error() -> None:
    def down() -> None:
        raise _dropped()

    with pytest.raises(OperationalError, match="server closed the connection"):
        retry_transient(down, seconds=0.3)
