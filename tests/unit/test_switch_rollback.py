"""Rollback after a failed switch step undoes only what the switch did, and never starts both colors.

The steps' transport (lifecycle HTTP calls, group offsets, the control topic) is replaced by a recorder whose
steps fail on demand; the real strategies run against the broker in tests/integration/test_switch_controller.py.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from pyrallel_consumer.bluegreen import controller as controller_module
from pyrallel_consumer.bluegreen.controller import Deployment, SwitchController, SwitchError

pytestmark = pytest.mark.unit


class Recorder:
    """Stands in for every side effect of a switch; ``fail`` names the calls that fail (each fails every time)."""

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.generations: list[tuple[str, int]] = []
        """(call, generation) of every lifecycle command and record write, in order."""

    def _do(self, call: str) -> None:
        self.calls.append(call)
        if call in self.fail:
            raise SwitchError(f"{call} failed")

    def lifecycle(self, color: str, command: str, generation: int, wait_s: float = 60.0,
                  body: object = None) -> None:
        self.generations.append((f"{command} {color}", generation))
        self._do(f"{command} {color}")

    def copy(self, source: str, target: str, write: bool) -> list[dict[str, object]]:
        self._do(f"copy {source}->{target}")
        return []

    def write(self, deployment: str, color: str, generation: int) -> None:
        self.generations.append((f"write {color}", generation))
        self.calls.append(f"write {color}")
        if f"write {color}" in self.fail:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "transaction coordinator unavailable"))


def _controller(monkeypatch: pytest.MonkeyPatch, fail: set[str]) -> tuple[SwitchController, Recorder]:
    recorder = Recorder(fail)
    writer = type("Writer", (), {"write": staticmethod(recorder.write)})
    monkeypatch.setattr(controller_module, "ActiveColorWriter", lambda *_args: writer)
    deployment = Deployment("dep", "127.0.0.1:1", {"blue": ["http://b"], "green": ["http://g"]},
                            groups={"blue": "gb", "green": "gg"})
    controller = SwitchController(deployment, "ctl")
    monkeypatch.setattr(controller, "current", lambda: None)
    monkeypatch.setattr(controller, "_lifecycle_all", recorder.lifecycle)
    monkeypatch.setattr(controller, "_group_positions", recorder.copy)
    monkeypatch.setattr(controller_module, "_status", lambda url, token: {"pause_mode": "release"})
    return controller, recorder


def test_failed_record_write_resumes_the_old_color(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, recorder = _controller(monkeypatch, {"write green"})
    result = controller.switch("C", "green")
    assert recorder.calls == ["pause blue", "write green", "resume blue"]
    assert result.rolled_back and not result.ok


def test_offsets_are_not_copied_back_when_the_new_color_never_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Green's group still holds stale offsets (or none): copying them into blue would rewind or fail it."""
    controller, recorder = _controller(monkeypatch, {"pause blue"})
    result = controller.switch("B", "green")
    assert recorder.calls == ["pause blue", "resume blue"]
    assert result.rolled_back


def test_a_started_new_color_is_stopped_and_its_position_copied_back(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, recorder = _controller(monkeypatch, {"resume green"})
    result = controller.switch("B", "green")
    assert recorder.calls == ["pause blue", "copy gb->gg", "write green", "resume green",
                              "pause green", "copy gg->gb", "write blue", "resume blue"]
    assert result.rolled_back


def test_old_color_stays_stopped_when_the_new_one_cannot_be_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paused is a stall an operator sees; both processing would break per-key order and duplicate."""
    controller, recorder = _controller(monkeypatch, {"resume green", "pause green"})
    result = controller.switch("C", "green")
    assert "resume blue" not in recorder.calls
    assert not result.rolled_back and not result.ok
    assert result.error is not None and "rollback failed" in result.error


@pytest.mark.parametrize("failing", ["pause blue", "write green", "resume green"])
def test_the_next_switch_after_a_rollback_is_not_refused_as_older(
    monkeypatch: pytest.MonkeyPatch, failing: str,
) -> None:
    """Consumers refuse a generation older than the last they saw; the next switch takes the record's plus one."""
    controller, recorder = _controller(monkeypatch, {failing})
    result = controller.switch("C", "green")
    assert result.rolled_back
    written = [g for call, g in recorder.generations if call.startswith("write") and call not in recorder.fail]
    record = max(written, default=0)  # what the control topic holds now (0: never written)
    highest_sent = max(g for call, g in recorder.generations if not call.startswith("write"))
    assert highest_sent <= record + 1, f"consumers saw {highest_sent}; the next switch sends {record + 1}"
