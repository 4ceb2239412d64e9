"""``pyrallel scenario run``: blue/green scenario runs against a real Kafka (and Kafka Connect for E)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pyrallel_tools.bluegreen.reporting.build import build_report
from pyrallel_tools.bluegreen.reporting.load import ReportError
from pyrallel_tools.bluegreen.run_spec import (
    DRIVERS,
    KUBERNETES_SCENARIOS,
    SCENARIOS,
    VARIANTS,
    RunOptions,
    ScenarioError,
    combination_problem,
)
from pyrallel_tools.bluegreen.scenarios import ScenarioRun
from pyrallel_tools.kafka_pairs import parse_kafka_pairs

log = logging.getLogger(__name__)


def plan(strategies: list[str], scenarios: list[int], driver: str = "direct") -> list[tuple[str, int, str | None]]:
    """Every (strategy, scenario, variant) that applies (see ``combination_problem``)."""
    runs: list[tuple[str, int, str | None]] = []
    for strategy in strategies:
        for scenario in scenarios:
            if combination_problem(strategy, scenario, driver) is not None:
                continue
            runs.extend((strategy, scenario, variant) for variant in VARIANTS[scenario])
    return runs


def run_plan(runs: list[tuple[str, int, str | None]], options: RunOptions, report_dir: Path) -> tuple[int, Path]:
    """Run each planned scenario, then build the report; return (failed runs, report path)."""
    failed = 0
    for strategy, scenario, variant in runs:
        click.echo(f"== strategy {strategy}, scenario {scenario}{' (' + variant + ')' if variant else ''}: "
                   f"{SCENARIOS[scenario]}")
        try:
            result = ScenarioRun(strategy, scenario, variant, options).execute()
        except ScenarioError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"   {result['verdict']}" + (f": {result['cause']}" if result["cause"] else ""))
        for index, switch in enumerate(result["switches"]):
            click.echo(f"   {switch['action']} {index} to {switch['to_color']}: processing gap "
                       f"{_seconds(switch['processing_gap_s'])}, latency p99 {_seconds(switch['latency_p99_s'])}"
                       f" (controller steps {switch['seconds']:.3f} s"
                       + (f", the Kubernetes controller's gap estimate {_seconds(switch['controller_gap_s'])}"
                          if result["environment"].get("driver") == "kubernetes" else "") + ")")
        failed += result["verdict"] != "PASS"
    try:
        path = build_report(options.out_dir, report_dir)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    return failed, path


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f} s"


def _checked_pairs(values: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--kafka`` items as ``KEY=VALUE`` strings for the consumers' command lines, checked first."""
    try:
        return tuple(f"{key}={value}" for key, value in parse_kafka_pairs(values).items())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kafka") from exc


@click.group()
def scenario() -> None:
    """Blue/green scenario runs (see docs/tutorial/README.md)."""


@scenario.command()
@click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS).")
@click.option("--connect-url", envvar="PYRALLEL_CONNECT_URL", default=None,
              help="Kafka Connect REST URL, for strategy E (env PYRALLEL_CONNECT_URL).")
@click.option("--strategy", "strategies", type=click.Choice(["B", "C", "E"]), multiple=True,
              help="Strategy to run (repeatable; default all three).")
@click.option("--scenario", "scenarios", type=click.IntRange(1, len(SCENARIOS)), multiple=True,
              help=f"Scenario 1..{len(SCENARIOS)} (repeatable; default all).")
@click.option("--instances", type=click.IntRange(1, 10), default=3, show_default=True, help="Consumers per color.")
@click.option("--partitions", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Partitions of the run's topic.")
@click.option("--rate", type=click.FloatRange(1, 10_000), default=100.0, show_default=True, help="Records per second.")
@click.option("--settle", type=click.FloatRange(0, 600), default=5.0, show_default=True,
              help="Seconds of production after each switch.")
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report/run"),
              show_default=True, help="Where each run's JSON goes (the input of pyrallel report).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True)
@click.option("--switches", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Scenario 6: switches in all, alternately to green and back to blue.")
@click.option("--kafka", "kafka", multiple=True, metavar="KEY=VALUE",
              help="Extra librdkafka property for every consumer of the runs (repeatable).")
@click.option("--driver", type=click.Choice(DRIVERS), default="direct", show_default=True,
              help="Who switches: the runner's own controller (direct), or the Kubernetes-native controller "
                   "(`controller serve --kubernetes`) through a ConsumerDeployment (kubernetes; scenarios "
                   f"{', '.join(map(str, KUBERNETES_SCENARIOS))}).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Driver kubernetes: the API server to use (default: a local one started in each run's work "
                   "directory, see pyrallel k8s up).")
def run(bootstrap_servers: str, connect_url: str | None, strategies: tuple[str, ...], scenarios: tuple[int, ...],
        instances: int, partitions: int, rate: float, settle: float, switches: int, runs_dir: Path, report_dir: Path,
        kafka: tuple[str, ...], driver: str, kubeconfig: Path | None) -> None:
    """Run scenarios, validate each with the loss/duplicate validator, and write the report."""
    if kubeconfig is not None and driver != "kubernetes":
        raise click.UsageError("--kubeconfig goes with --driver kubernetes")
    wanted = list(scenarios or SCENARIOS)
    chosen = plan(list(strategies or ("B", "C", "E")), wanted, driver)
    if not chosen:
        problems = {combination_problem(s, n, driver) for s in strategies or ("B", "C", "E") for n in wanted}
        raise click.UsageError("no run applies: " + "; ".join(sorted(p for p in problems if p)))
    if any(s == "E" for s, _, _ in chosen) and not connect_url:
        raise click.UsageError("strategy E needs --connect-url (start Connect with: pyrallel kafka up --connect)")
    options = RunOptions(bootstrap=bootstrap_servers, connect_url=connect_url, out_dir=runs_dir,
                         work_dir=report_dir / "work", instances=instances, partitions=partitions, rate=rate,
                         settle_s=settle, switches=switches, consumer_kafka=_checked_pairs(kafka),
                         driver=driver, kubeconfig=kubeconfig)
    failed, path = run_plan(chosen, options, report_dir)
    click.echo(f"{len(chosen) - failed} of {len(chosen)} runs passed. Report: {path.resolve()}")
    if failed:
        raise SystemExit(1)
