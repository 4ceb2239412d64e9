"""What a scenario run is: the catalogue of scenarios, the run's options, and the names one run gives its things.

The scenario runner (:mod:`pyrallel_tools.bluegreen.scenarios`) checks a strategy x scenario (x variant) here
before anything starts, and hands the resulting :class:`RunSpec` to its parts (the processes, the status
sampler, the criteria), so that each derives the topic, the groups and the file names the same way. The
``pyrallel scenario`` and ``pyrallel demo`` commands build the :class:`RunOptions`. Plain data: any thread.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from pyrallel_consumer.bluegreen.controller import COLORS

SCENARIOS: dict[int, str] = {
    1: "Normal blue -> green switch, then blue scaled down",
    2: "Switch, then immediate rollback",
    3: "Switch while blue has a lag above 500",
    4: "A consumer process killed and restarted during the switch",
    5: "Green deployed with a high failure rate: automatic rollback",
    6: "Repeated switches and rollbacks at a steady load, each from a settled state",
}
VARIANTS: dict[int, tuple[str | None, ...]] = {1: (None,), 2: (None,), 3: ("wait-for-lag-0", "switch-now"),
                                               4: ("dynamic", "static"), 5: (None,), 6: (None,)}


class ScenarioError(RuntimeError):
    """A scenario could not be set up or acted out (not a failed verdict: that is a result)."""


@dataclass(slots=True)
class RunOptions:
    bootstrap: str
    connect_url: str | None = None
    out_dir: Path = Path("report/run")
    work_dir: Path = Path("report/work")
    instances: int = 3
    partitions: int = 8
    rate: float = 100.0
    keys: int = 64
    workload: str = "sleep:2ms"
    settle_s: float = 5.0
    """How long the producer keeps going after the switch (and between a switch and its rollback)."""
    switches: int = 10
    """Scenario 6: how many switches, alternately to green (a switch) and back to blue (a rollback)."""
    consumer_kafka: tuple[str, ...] = ()
    """Extra librdkafka properties (``KEY=VALUE``) for every consumer of the run, e.g. heartbeat settings."""
    driver: str = "direct"
    """Who switches: ``direct`` (the runner's in-process SwitchController) or ``kubernetes`` (the Kubernetes-native
    controller, through a ConsumerDeployment; see :mod:`pyrallel_tools.bluegreen.kube_driver`)."""
    kubeconfig: Path | None = None
    """Driver ``kubernetes``: the API server to use; None starts a local one in the run's work directory."""


DRIVERS = ("direct", "kubernetes")
KUBERNETES_SCENARIOS = (1, 2, 6)
"""What the Kubernetes driver acts out: its switches are requested, not called, so the scenarios that act during a
switch (4 kills a consumer while it runs) or judge the health check of a faulty green (3, 5: not tried through the
controller yet) stay with the direct driver."""


def combination_problem(strategy: str, scenario: int, driver: str = "direct") -> str | None:
    """Why ``strategy`` cannot run ``scenario`` (switched by ``driver``), or None when it can: the one place these
    rules live (the CLI's planner skips such pairs, a single run refuses them)."""
    if driver not in DRIVERS:
        return f"driver must be {' or '.join(DRIVERS)}, not {driver!r}"
    if driver == "kubernetes" and scenario not in KUBERNETES_SCENARIOS:
        return (f"the Kubernetes driver runs scenarios {', '.join(map(str, KUBERNETES_SCENARIOS))}; run scenario "
                f"{scenario} with --driver direct")
    if scenario == 4 and strategy != "C":
        return "scenario 4 is for strategy C only"
    if strategy == "E" and scenario in (3, 5):
        return ("scenarios 3 and 5 need fault injection in the consumer, which a FileStreamSink connector does not "
                "have; run them with B or C")
    return None


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One strategy x scenario (x variant) run, checked, with its unique id and the names derived from it."""

    strategy: str
    scenario: int
    variant: str | None
    options: RunOptions
    run_id: str

    @classmethod
    def checked(cls, strategy: str, scenario: int, variant: str | None, options: RunOptions) -> RunSpec:
        """The run, if the combination applies; :class:`ScenarioError` saying why not otherwise."""
        if strategy not in ("B", "C", "E"):
            raise ScenarioError(f"strategy must be B, C or E, not {strategy!r}")
        if scenario not in SCENARIOS:
            raise ScenarioError(f"scenario must be 1..{len(SCENARIOS)}, not {scenario!r}")
        problem = combination_problem(strategy, scenario, options.driver)
        if problem is not None:
            raise ScenarioError(problem)
        if variant not in VARIANTS[scenario]:
            raise ScenarioError(f"scenario {scenario} variants: {', '.join(str(v) for v in VARIANTS[scenario])}")
        if strategy == "E" and not options.connect_url:
            raise ScenarioError("strategy E needs a Kafka Connect worker (--connect-url)")
        run_id = f"{strategy}{scenario}{'-' + variant if variant else ''}-{uuid.uuid4().hex[:6]}"
        return cls(strategy, scenario, variant, options, run_id)

    @property
    def work(self) -> Path:
        """The run's own directory for logs and sink files."""
        return self.options.work_dir / self.run_id

    @property
    def topic(self) -> str:
        return f"bg-{self.run_id}"

    @property
    def deployment_name(self) -> str:
        """The control record's key, also the ConsumerDeployment's name (lower case: a Kubernetes name)."""
        return f"dep-{self.run_id.lower()}"

    def groups(self) -> dict[str, str]:
        """Each color's consumer group: one per color for B and E, one shared by both colors for C."""
        if self.strategy == "B":
            return {c: f"grp-{self.run_id}-{c}" for c in COLORS}
        if self.strategy == "E":
            return {c: f"connect-{self.run_id}-{c}" for c in COLORS}
        return dict.fromkeys(COLORS, f"grp-{self.run_id}")

    def connector(self, color: str) -> str:
        """The name of the color's Kafka Connect connector (strategy E)."""
        return f"{self.run_id}-{color}"
