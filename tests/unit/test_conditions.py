"""storefs/store/conditions.py: what a ConditionalWrites record enforces, the helpers of create-only
providers, and ProbedOnce (one probe, however many uploads ask at once)."""
from __future__ import annotations

import threading
import time

import pytest

from storefs.errors import AlreadyExists, NotSupported, PreconditionFailed, RemoteChanged, Transient
from storefs.store.conditions import (NO_CONDITIONAL_WRITES, ConditionalWrites, ProbedOnce, WriteCondition,
                                      create_only, exists_refusal, no_condition)


def test_enforces_each_condition_on_its_own_path():
    moto_like = ConditionalWrites(absent=True, match=True, absent_multipart=True, match_multipart=False)
    assert moto_like.enforces(WriteCondition(), multipart=False)
    assert moto_like.enforces(WriteCondition("e"), multipart=False)
    assert moto_like.enforces(WriteCondition(), multipart=True)
    assert not moto_like.enforces(WriteCondition("e"), multipart=True)
    assert not NO_CONDITIONAL_WRITES.enforces(WriteCondition(), multipart=False)


def test_create_only_providers_refuse_what_they_cannot_enforce():
    assert create_only(None, "X") is False
    assert create_only(WriteCondition(), "X") is True
    with pytest.raises(NotSupported):
        create_only(WriteCondition("etag"), "X")
    no_condition(None, "X")
    with pytest.raises(NotSupported):
        no_condition(WriteCondition(), "X")


def test_exists_is_a_failed_precondition_only_for_a_conditional_write():
    with pytest.raises(PreconditionFailed) as refused:
        with exists_refusal(WriteCondition()):
            raise AlreadyExists("taken", code="-177")
    assert refused.value.code == "-177" and isinstance(refused.value, RemoteChanged)
    with pytest.raises(AlreadyExists):
        with exists_refusal(None):
            raise AlreadyExists("taken")


def test_probed_once_however_many_ask_at_once():
    calls = []

    def probe() -> ConditionalWrites:
        calls.append(1)
        time.sleep(0.05)
        return ConditionalWrites(absent=True, how="probed")

    once = ProbedOnce()
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(once.get(probe))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(answers) == 8 and all(a.how == "probed" for a in answers)


def test_a_probe_that_fails_transiently_is_asked_again():
    once = ProbedOnce()

    def unreachable() -> ConditionalWrites:
        raise Transient("no route")

    with pytest.raises(Transient):
        once.get(unreachable)
    assert once.get(lambda: ConditionalWrites(match=True)).match
