"""The consume app's fail-every fault: the records whose seq is a multiple of N fail every attempt, in the async
handler and in engine=process workers alike; nothing else fails; the option reaches the app from the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyrallel_consumer import ConsumerConfig, Output, Record
from pyrallel_tools.bluegreen import consume_app
from pyrallel_tools.bluegreen.consume_app import (
    STATE_ENV,
    ConsumeApp,
    Faults,
    InjectedFailureError,
    RunLimits,
    handle_sync,
    inject_failures,
)
from pyrallel_tools.bluegreen.load_producer import record_value
from pyrallel_tools.cli.main import cli

pytestmark = pytest.mark.unit


def _record(seq: int) -> Record:
    value = record_value(seq, f"k{seq % 7}", seq // 7, 64, random.Random(seq))
    return Record("t", 0, seq, f"k{seq % 7}".encode(), value)


def _fails(record: Record, fail_every: int) -> bool:
    try:
        inject_failures(record, 0.0, fail_every, random.Random(1))
    except InjectedFailureError:
        return True
    return False


def test_records_whose_seq_is_a_multiple_fail_and_no_others() -> None:
    failing = [seq for seq in range(100) if _fails(_record(seq), 25)]
    assert failing == [0, 25, 50, 75]
    assert not any(_fails(_record(seq), 0) for seq in range(100))
    assert not _fails(Record("t", 0, 0, None, b"not json"), 1)
    assert not _fails(Record("t", 0, 0, None, None), 1)


async def test_the_async_handler_fails_every_attempt_of_those_records() -> None:
    config = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"])
    app = ConsumeApp(config, "noop", Faults(fail_every=3), None, RunLimits(duration_s=1))
    for _attempt in range(3):
        with pytest.raises(InjectedFailureError, match="fail_every=3"):
            await app.handle(_record(6))
    await app.handle(_record(7))


def test_process_workers_read_fail_every_from_the_state_file(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"workload": "noop", "delay_ms": 0, "failure_rate": 0, "fail_every": 4}))
    monkeypatch.setenv(STATE_ENV, str(state))
    monkeypatch.setattr(consume_app._WorkerState, "checked_at", 0.0)
    monkeypatch.setattr(consume_app._WorkerState, "version", None)
    with pytest.raises(InjectedFailureError, match="fail_every=4"):
        handle_sync(_record(8))
    handle_sync(_record(9))


def test_the_consume_command_passes_fail_every_to_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(self: ConsumeApp, stop: Any = None, on_ready: Any = None) -> Any:
        seen["faults"] = self.faults

        async def summary() -> dict[str, Any]:
            return {"error": None}

        return summary()

    monkeypatch.setattr(ConsumeApp, "run", fake_run)
    result = CliRunner().invoke(cli, ["consume", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t",
                                      "--group", "g", "--until-signal", "--fault-fail-every", "50"])
    assert result.exit_code == 0, result.output
    assert seen["faults"].fail_every == 50
    refused = CliRunner().invoke(cli, ["consume", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t",
                                       "--group", "g", "--until-signal", "--fault-fail-every", "-1"])
    assert refused.exit_code == 2


async def test_output_topic_makes_every_record_return_its_output_in_both_handlers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ConsumerConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topics=["t"],
                            processing_guarantee="exactly_once")
    app = ConsumeApp(config, "noop", Faults(), None, RunLimits(duration_s=1), output_topic="out")
    record = _record(5)
    assert await app.handle(record) == [Output("out", record.value, key=record.key)]
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"workload": "noop", "delay_ms": 0, "failure_rate": 0, "output_topic": "out"}))
    monkeypatch.setenv(STATE_ENV, str(state))
    monkeypatch.setattr(consume_app._WorkerState, "checked_at", 0.0)
    monkeypatch.setattr(consume_app._WorkerState, "version", None)
    monkeypatch.setattr(consume_app._WorkerState, "output_topic", None)  # restored after the test
    assert handle_sync(record) == [Output("out", record.value, key=record.key)]


def test_the_consume_command_turns_exactly_once_on_with_an_output_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(self: ConsumeApp, stop: Any = None, on_ready: Any = None) -> Any:
        seen["config"], seen["output_topic"] = self.config, self.output_topic

        async def summary() -> dict[str, Any]:
            return {"error": None}

        return summary()

    monkeypatch.setattr(ConsumeApp, "run", fake_run)
    result = CliRunner().invoke(cli, ["consume", "--bootstrap-servers", "127.0.0.1:1", "--topic", "t",
                                      "--group", "g", "--until-signal", "--output-topic", "out"])
    assert result.exit_code == 0, result.output
    assert seen["config"].processing_guarantee == "exactly_once" and seen["output_topic"] == "out"
