"""call_with_retries: bounded tries, only Transient retried, and log lines that name the operation once."""
from __future__ import annotations

import logging

import pytest

from storefs.errors import NotFound, Transient
from storefs.wire.retry import RetryPolicy, call_with_retries


def test_transient_failures_are_retried_and_logged_once_per_try(caplog):
    tries = []

    def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise Transient("put 'x': 503 SlowDown")
        return "done"

    with caplog.at_level(logging.INFO, logger="storefs.wire.retry"):
        assert call_with_retries(flaky, RetryPolicy(attempts=5, base_delay=0), what="r: put 'x'",
                                 sleep=lambda s: None) == "done"
    lines = [r.getMessage() for r in caplog.records]
    assert len(tries) == 3 and len(lines) == 2
    assert all(line.startswith("r: put 'x': 503 SlowDown; retry") for line in lines), lines


def test_giving_up_says_so_and_other_errors_are_not_retried(caplog):
    def down():
        raise Transient("PUT http://127.0.0.1:9: ConnectionRefusedError")

    with caplog.at_level(logging.WARNING, logger="storefs.wire.retry"), pytest.raises(Transient):
        call_with_retries(down, RetryPolicy(attempts=2, base_delay=0), what="r: put 'x'", sleep=lambda s: None)
    assert "r: put 'x' failed after 2 tries" in caplog.text and "ConnectionRefusedError" in caplog.text
    tries = []

    def missing():
        tries.append(1)
        raise NotFound("x")

    with pytest.raises(NotFound):
        call_with_retries(missing, RetryPolicy(attempts=5), what="r: stat 'x'", sleep=lambda s: None)
    assert len(tries) == 1
