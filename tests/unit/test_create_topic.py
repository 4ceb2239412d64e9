"""Topic creation waits for metadata that lags behind the broker's acknowledgement.

The broker's metadata cache can answer without a topic it has just acknowledged creating (seen in CI);
the fake admin client here replays that answer, which the real broker gives only by chance.
"""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from pyrallel_tools.localkafka import topics
from pyrallel_tools.localkafka.errors import LocalKafkaError

pytestmark = pytest.mark.unit


class LaggingAdmin:
    """Acknowledges the creation, then shows the topic only from the ``shown_after``-th metadata request."""

    def __init__(self, shown_after: int, partitions: int) -> None:
        self.shown_after = shown_after
        self.partitions = partitions
        self.requests = 0

    def create_topics(self, new: list[Any]) -> dict[str, Future[None]]:
        done: Future[None] = Future()
        done.set_result(None)
        self.name = new[0].topic
        return {self.name: done}

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        self.requests += 1
        if self.requests < self.shown_after:
            return SimpleNamespace(topics={})
        parts = {i: SimpleNamespace(error=None, leader=1) for i in range(self.partitions)}
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions=parts)})


def test_metadata_missing_right_after_creation_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = LaggingAdmin(shown_after=3, partitions=4)
    monkeypatch.setattr(topics, "AdminClient", lambda _conf: admin)
    topics.create_topic("127.0.0.1:1", "orders", 4)
    assert admin.requests == 3


def test_metadata_that_never_completes_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "AdminClient", lambda _conf: LaggingAdmin(shown_after=10**9, partitions=4))
    with pytest.raises(LocalKafkaError, match=r"'orders' was created but its metadata is incomplete after 0.3 s"):
        topics.create_topic("127.0.0.1:1", "orders", 4, timeout_s=0.3)
