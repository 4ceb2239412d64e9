"""Lifecycle control: ACTIVE / DRAINING / PAUSED on request, idempotent, generation-fenced.

Requests return at once with the state they lead to; one background task applies the latest desired
state, so repeated or crossing requests never run two transitions at the same time. What a transition does is the
``Suspendable``'s: the consumer group's Coordinator, or the share consumer's intake (``share_consumer``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pyrallel_consumer.control.positions import Position, check_distinct
from pyrallel_consumer.event_wait import wait_event
from pyrallel_consumer.observability.log_events import LIFECYCLE_TRANSITION, POSITIONS_TAKEN, event_extra

if TYPE_CHECKING:
    from pyrallel_consumer.config import ConsumerConfig

log = logging.getLogger(__name__)


class LifecycleState(StrEnum):
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    DRAINING = "DRAINING"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"


class GenerationError(ValueError):
    """A lifecycle command's generation was refused; the consumer's state and generation did not change.

    Raised on the event-loop thread by ``Lifecycle.request_pause/request_resume/pause/resume``; the control
    server answers it with HTTP 409.
    """


class PositionsRefusedError(ValueError):
    """Positions for a consumer that is not PAUSED and settled there, that released its partitions, or of a topic
    it does not consume: taking them could move a consumer under its own progress. Nothing changed; the control
    server answers 409."""


class StaleGenerationError(GenerationError):
    """A command carried an older generation than this consumer has seen: a fenced-off controller sent it."""


class GenerationTooFarAheadError(GenerationError):
    """A command's generation is more than ``control_max_generation_step`` ahead of the consumer's.

    Accepting it would make every later command of the real controller look older, locking it out until the
    consumer restarts (see docs/decisions.md, "Lifecycle generations move forward by a bounded step").
    """


class Suspendable(Protocol):
    """What a Lifecycle pauses and resumes; every method is called on the event loop."""

    async def suspend(self, release: bool) -> None:
        """Stop processing: nothing new starts, what runs finishes (up to ``drain_timeout_ms``), progress is
        committed; ``release``: leave the group too."""

    async def activate(self) -> None:
        """Process again (rejoining the group if it was left)."""

    async def take_positions(self, positions: Sequence[Position]) -> None:
        """While suspended and holding its partitions: commit handed-over positions and restart from them."""

    @property
    def broker_answered(self) -> bool:
        """Whether a broker has answered since start (for /readyz)."""

    def lifecycle_status(self) -> dict[str, Any]:
        """What ``GET /lifecycle/status`` adds about the records and partitions."""


class StateObserver(Protocol):
    """Who is told of each state a Lifecycle enters: the consumer group's metrics exporter (a ConsumerObserver) or
    the share consumer's ShareStats; both export ``kafka_consumer_lifecycle_state``."""

    def lifecycle_changed(self, state: str) -> None:
        """The consumer entered a lifecycle state (its metrics export it)."""


class Lifecycle:
    """The lifecycle of one consumer; every method runs on the consumer's event loop."""

    def __init__(self, target: Suspendable, config: ConsumerConfig, observer: StateObserver) -> None:
        self._target = target
        self._config = config
        self._observer = observer
        self.state = LifecycleState.STARTING
        self._desired = LifecycleState.PAUSED if config.start_paused else LifecycleState.ACTIVE
        self.generation = 0
        self.last_transition = time.time()
        self.last_cause = "start"
        self._changed = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def _enter(self, state: LifecycleState, cause: str) -> None:
        if state is self.state:
            return
        log.info("Lifecycle %s -> %s (%s) color=%s instance=%s generation=%d", self.state.value, state.value,
                 cause, self._config.color, self._config.instance_id, self.generation,
                 extra=event_extra(LIFECYCLE_TRANSITION, from_state=self.state.value, to_state=state.value,
                                   cause=cause, generation=self.generation, color=self._config.color,
                                   instance=self._config.instance_id))
        self.state = state
        self.last_transition = time.time()
        self.last_cause = cause
        self._observer.lifecycle_changed(state.value)
        self._changed.set()
        self._changed = asyncio.Event()

    def started(self) -> None:
        self._enter(self._desired, "started paused" if self._desired is LifecycleState.PAUSED else "started")

    def stopped(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._enter(LifecycleState.STOPPED, "stop")

    def _fence(self, generation: int | None) -> None:
        """Accept ``generation`` if it is neither older than the current one nor too far ahead of it."""
        if generation is None:
            return
        if generation < self.generation:
            raise StaleGenerationError(f"generation {generation} is older than the current {self.generation}")
        step = self._config.control_max_generation_step
        if generation - self.generation > step:
            raise GenerationTooFarAheadError(
                f"generation {generation} is more than control_max_generation_step={step} ahead of the current "
                f"generation {self.generation}: refused, nothing changed (a switch moves it by 1, a rollback by "
                f"1 more; a consumer that missed more switches takes the generation of the active-color record "
                f"when restarted with --deployment)"
            )
        self.generation = generation

    def request_pause(self, generation: int | None = None, cause: str = "pause requested") -> LifecycleState:
        """Ask for PAUSED; returns the state the consumer is heading to (DRAINING while it drains)."""
        return self._request(LifecycleState.PAUSED, generation, cause)

    def request_resume(self, generation: int | None = None, cause: str = "resume requested") -> LifecycleState:
        return self._request(LifecycleState.ACTIVE, generation, cause)

    async def take_positions(self, positions: Sequence[Position], generation: int | None = None) -> None:
        """Take handed-over positions while PAUSED (see ``control.positions``); the resume comes separately.

        Only a consumer that is PAUSED with no transition under way and that holds its partitions while paused
        (``pause_mode="hold"``) takes them: anything else could move a consumer that processes, or is about to,
        under its own progress (PositionsRefusedError, nothing changed). Returns once they are committed and the
        held partitions restarted; a failure propagates and the consumer stays PAUSED.
        """
        check_distinct(positions)
        if (self.state is not LifecycleState.PAUSED or self._desired is not LifecycleState.PAUSED
                or (self._worker is not None and not self._worker.done())):
            raise PositionsRefusedError(f"positions are taken only by a PAUSED consumer with no transition under "
                                        f"way; this one is {self.state.value} (heading to {self._desired.value})")
        if self._config.pause_mode != "hold":
            raise PositionsRefusedError("positions are taken only with pause_mode='hold' (a paused consumer that "
                                        "released its partitions is no member of its group to commit them)")
        foreign = sorted({p.topic for p in positions} - set(self._config.topics))
        if foreign:
            raise PositionsRefusedError(f"positions for topic(s) this consumer does not consume: {', '.join(foreign)}")
        self._fence(generation)
        await self._target.take_positions(positions)
        log.info("Took %d handed-over position(s) color=%s instance=%s generation=%d", len(positions),
                 self._config.color, self._config.instance_id, self.generation,
                 extra=event_extra(POSITIONS_TAKEN, position_count=len(positions), generation=self.generation,
                                   color=self._config.color, instance=self._config.instance_id))

    def _request(self, desired: LifecycleState, generation: int | None, cause: str) -> LifecycleState:
        if self.state in (LifecycleState.STOPPED, LifecycleState.STARTING):
            raise RuntimeError(f"the consumer is {self.state.value}; lifecycle commands need it running")
        self._fence(generation)
        self._desired = desired
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._apply(cause), name="pyrallel-lifecycle")
        if desired is LifecycleState.PAUSED and self.state is LifecycleState.ACTIVE:
            return LifecycleState.DRAINING
        return desired if self.state is not desired else self.state

    async def _apply(self, cause: str) -> None:
        try:
            await self._transitions(cause)
        finally:
            self._changed.set()  # the transition is over: waiters look again (wait_for needs no worker running)
            self._changed = asyncio.Event()

    async def _transitions(self, cause: str) -> None:
        while self.state is not self._desired and self.state is not LifecycleState.STOPPED:
            if self._desired is LifecycleState.PAUSED:
                self._enter(LifecycleState.DRAINING, cause)
                await self._target.suspend(release=self._config.pause_mode == "release")
                self._enter(LifecycleState.PAUSED, cause)
            else:
                await self._target.activate()
                self._enter(LifecycleState.ACTIVE, cause)

    @property
    def ready(self) -> bool:
        """For /readyz: running (ACTIVE or PAUSED) and a broker has answered since start.

        With missing_topic='wait', start() does not wait for the broker, so the state alone would call a consumer
        whose bootstrap servers are unreachable ready. Read on the event loop (the control server's handlers).
        """
        running = self.state in (LifecycleState.ACTIVE, LifecycleState.PAUSED)
        return running and self._target.broker_answered

    async def wait_for(self, state: LifecycleState, timeout_s: float) -> bool:
        """Wait until the consumer is in ``state``; False when the timeout passed first."""
        deadline = time.monotonic() + timeout_s
        while self.state is not state or (self._worker is not None and not self._worker.done()):
            # A transition under way may still leave ``state`` (a pause while a resume is being applied answers
            # PAUSED only once that resume's activation and the drain after it are over).
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await wait_event(self._changed, remaining)
        return True

    async def pause(self, timeout_s: float = 60.0, generation: int | None = None) -> bool:
        self.request_pause(generation)
        return await self.wait_for(LifecycleState.PAUSED, timeout_s)

    async def resume(self, timeout_s: float = 60.0, generation: int | None = None) -> bool:
        self.request_resume(generation)
        return await self.wait_for(LifecycleState.ACTIVE, timeout_s)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "desired_state": self._desired.value,
            "color": self._config.color,
            "instance": self._config.instance_id,
            "group_id": self._config.group_id,
            "group_type": self._config.group_type,
            "generation": self.generation,
            "max_generation_step": self._config.control_max_generation_step,
            "pause_mode": self._config.pause_mode,
            **self._target.lifecycle_status(),
            "last_transition": self.last_transition,
            "last_transition_cause": self.last_cause,
        }
