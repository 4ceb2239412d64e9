"""Fixtures of the fault suite: one :class:`FaultRun` per test on the session's 3-broker ``fault_cluster``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyrallel_tools.localkafka.cluster import LocalKafka
from tests.faults.harness import FaultRun


@pytest.fixture
def fault_run(fault_cluster: LocalKafka, tmp_path: Path, unique_name: Callable[[str], str]) -> Iterator[FaultRun]:
    run = FaultRun(fault_cluster, tmp_path, unique_name("t"), unique_name("g"))
    run.create_topic()
    try:
        yield run
    finally:
        run.close()
