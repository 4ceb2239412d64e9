"""``pyrallel bench``: benchmarks against the local real broker, side by side with the baseline and with peers."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_tools.benchmark.harness import WORKLOADS
from pyrallel_tools.benchmark.results import ResultError, markdown
from pyrallel_tools.localkafka.errors import LocalKafkaError

_PATH = click.Path(path_type=Path)


@click.command()
@click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS",
              help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS); not needed with --rebuild.")
@click.option("--suite", type=click.Choice(["all", "core", "cpu", "eos", "rebalance", "recovery", "batch", "scale"]),
              default="all",
              show_default=True,
              help="all: every workload and contender, latency and restart checks, peers included. core: no-op and "
                   "I/O-bound, this library and the baseline. cpu: CPU-bound and no-op, process vs async engine. "
                   "eos: exactly-once vs at-least-once (async engine, 1,000 keys, 5 ms), twice each, alternating. "
                   "rebalance: hand-over time when a member joins and leaves, a plain confluent-kafka group vs "
                   "PyrallelConsumers (writes rebalance-*.json/md only). recovery: time until a SIGKILLed member's "
                   "partitions are handled again, default vs recommended settings (static membership), plain "
                   "group vs PyrallelConsumers (writes recovery-*.json/md only). batch: a batch handler vs the "
                   "per-record handler for a bulk write (5 ms per call + 0.05 ms per record): throughput and the "
                   "latency of lingering (writes batch-*.json/md only). scale: the async engine's records/s, CPU per "
                   "record and peak RSS as partitions, keys, value size and instances of one group grow, and a "
                   "backlog of 1,000,000 records (writes scale-*.json/md/png only; --rebuild takes its JSON).")
@click.option("--noop-records", type=click.IntRange(1000), help="Records per no-op run (default 200,000).")
@click.option("--io-records", type=click.IntRange(1000), help="Records per I/O-bound run (default 100,000).")
@click.option("--cpu-records", type=click.IntRange(100), help="Records per CPU-bound run (default 6,000).")
@click.option("--topic-records", type=click.IntRange(1000), help="Records pre-produced per topic (default 200,000).")
@click.option("--max-seconds", type=click.FloatRange(0.5), help="A run also ends this long after its first record.")
@click.option("--workers", type=click.IntRange(1), help="Processes of the CPU-bound contenders (default 2).")
@click.option("--no-peers", is_flag=True, help="Only this library and the references.")
@click.option("--no-latency", is_flag=True, help="Skip the rate-limited latency runs.")
@click.option("--no-restart", is_flag=True, help="Skip the SIGKILL/restart duplicate check.")
@click.option("--kafka", "kafka", multiple=True, metavar="KEY=VALUE",
              help="Suite rebalance: an extra librdkafka property for both contenders (repeatable), e.g. "
                   "heartbeat.interval.ms=500; recorded in the results.")
@click.option("--repetitions", type=click.IntRange(1), default=3, show_default=True,
              help="Suite rebalance: how many times each event (join, leave) is measured per contender.")
@click.option("--kills", type=click.IntRange(1), default=10, show_default=True,
              help="Suite recovery: kills per recommended-settings contender.")
@click.option("--default-kills", type=click.IntRange(1), default=3, show_default=True,
              help="Suite recovery: kills per default-settings contender (each waits out a 45 s session).")
@click.option("--broker-restart-every", type=click.IntRange(0), default=3, show_default=True,
              help="Suite recovery: every n-th kill restarts the local broker before the replacement starts "
                   "(0: never; skipped when the broker is not the local Kafka of --kafka-run-dir).")
@click.option("--kafka-run-dir", type=_PATH, default=None,
              help="Suite recovery: run directory of the local Kafka to restart (default: $PYRALLEL_KAFKA_RUN_DIR "
                   "or ./.run/kafka).")
@click.option("--contender", "contenders", multiple=True,
              type=click.Choice(["plain-default", "pyrallel-default", "plain-recommended", "pyrallel-recommended"]),
              help="Suite recovery: only these contenders (repeatable; default all four).")
@click.option("--out", type=_PATH, default=Path("benchmarks/results"), show_default=True,
              help="Results directory (JSON, markdown, PNG).")
@click.option("--readme", type=_PATH, default=Path("benchmarks/README.md"), show_default=True,
              help="README whose results section is replaced (suite all only).")
@click.option("--peers-dir", type=_PATH, default=Path("benchmarks/peers"), show_default=True,
              help="Peer scripts and the Java harness.")
@click.option("--venv-root", type=_PATH, default=Path("benchmarks"), show_default=True,
              help="Where the peers' virtualenvs (.venv-peer-*) are created on first use.")
@click.option("--run-dir", type=_PATH, default=Path(".run/bench"), show_default=True,
              help="Contenders' stderr and record logs.")
@click.option("--profile", "profile", metavar="CONTENDER",
              help="Instead of the benchmark: profile one contender (cProfile pstats, py-spy flame graph), e.g. "
                   "async-key, process-key, baseline, aio-gather, pyrallel-1.0.0-async-key.")
@click.option("--profile-workload", type=click.Choice(sorted(WORKLOADS)), default="noop", show_default=True)
@click.option("--profile-keys", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--rebuild", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Rebuild tables, plots and the README section from a results JSON file (no broker).")
def bench(bootstrap_servers: str | None, suite: str, noop_records: int | None, io_records: int | None,
          cpu_records: int | None, topic_records: int | None, max_seconds: float | None, workers: int | None,
          no_peers: bool, no_latency: bool, no_restart: bool, kafka: tuple[str, ...], repetitions: int, kills: int,
          default_kills: int, broker_restart_every: int, kafka_run_dir: Path | None, contenders: tuple[str, ...],
          out: Path, readme: Path, peers_dir: Path, venv_root: Path, run_dir: Path, profile: str | None,
          profile_workload: str, profile_keys: int, rebuild: Path | None) -> None:
    """Run the benchmark: this library against its baseline and its peers.

    Every contender consumes the same pre-produced topics (8 partitions; 100, 1,000 and 10,000 keys), each in
    its own process: the sequential baseline, this library's async and process engines, hand-rolled peers
    (AIOConsumer + gather, a thread pool), pyrallel-consumer 1.0.0, arroyo and Java parallel-consumer.
    Throughput, latency on a rate-limited run, peak RSS, CPU per 1,000 records and duplicates after a SIGKILL;
    results under benchmarks/results/, tables and plots in benchmarks/README.md.

    ``--suite rebalance`` instead measures how long partitions go without an owner when a member joins and when
    one leaves, for a plain confluent-kafka group and for PyrallelConsumers, one process per member.

    ``--suite recovery`` measures how long a SIGKILLed member's partitions go unhandled when it is restarted at
    once (sometimes with a broker restart in between), default settings against static membership.

    ``--suite scale`` measures this library's async engine alone as the work grows (partitions, keys, value size,
    instances of one group, a backlog of 1,000,000 records); its topics are deleted afterwards."""
    if suite == "rebalance":
        _rebalance(bootstrap_servers, kafka, repetitions, out, run_dir, profile, rebuild)
        return
    if suite == "batch":
        if kafka or profile or rebuild is not None:
            raise click.UsageError("--kafka, --profile and --rebuild do not apply to --suite batch")
        _batch(bootstrap_servers, out)
        return
    if suite == "scale":
        if kafka or profile:
            raise click.UsageError("--kafka and --profile do not apply to --suite scale")
        _scale(bootstrap_servers, out, run_dir, rebuild)
        return
    if suite == "recovery":
        if kafka or profile or rebuild is not None:
            raise click.UsageError("--kafka, --profile and --rebuild do not apply to --suite recovery")
        _recovery(bootstrap_servers, kills, default_kills, broker_restart_every, kafka_run_dir, contenders, out,
                  run_dir)
        return
    if kafka:
        raise click.UsageError("--kafka is only taken by --suite rebalance")
    from pyrallel_tools.benchmark.runner import plan_for, rebuild_outputs, run_bench

    name = "bench" if suite == "all" else suite
    readme_path = readme if suite == "all" else None
    # The defaults are paths of a checkout of the repository, where the peers' harnesses and the README live.
    if readme_path is not None and not readme_path.is_file():
        raise click.UsageError(f"--readme {readme} does not exist: run from a checkout of the repository, or pass "
                               "--readme (a Markdown file to write the results section into) or --suite core|cpu")
    if not no_peers and rebuild is None and not peers_dir.is_dir():
        raise click.UsageError(f"--peers-dir {peers_dir} does not exist: run from a checkout of the repository, "
                               "or pass --peers-dir, or --no-peers")
    try:
        if rebuild is not None:
            click.echo(markdown(rebuild_outputs(rebuild, out, name, readme_path)))
            return
        if not bootstrap_servers:
            raise click.UsageError("--bootstrap-servers (or PYRALLEL_BOOTSTRAP_SERVERS) is required")
        records = {k: v for k, v in (("noop", noop_records), ("sleep5ms", io_records), ("cpu2ms", cpu_records))
                   if v is not None}
        plan = plan_for(suite, records=records or None, topic_records=topic_records, max_seconds=max_seconds,
                        workers=workers, with_peers=False if no_peers else None,
                        latency=False if no_latency else None, restart=False if no_restart else None)
        if profile:
            from pyrallel_tools.benchmark.profiling import ProfileError, profile_contender

            try:
                written = profile_contender(bootstrap_servers, profile, profile_workload, profile_keys, plan, out,
                                            peers_dir, venv_root, run_dir)
            except ProfileError as exc:
                raise click.ClickException(str(exc)) from exc
            click.echo("\n".join(str(p) for p in written))
            return
        report = run_bench(bootstrap_servers, plan, out, peers_dir, venv_root, run_dir, name, readme_path)
    except (LocalKafkaError, ResultError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(markdown(report))
    click.echo(f"Results written to {out.resolve()} in {report.duration_s:.0f} s")


def _rebalance(bootstrap_servers: str | None, kafka: tuple[str, ...], repetitions: int, out: Path, run_dir: Path,
               profile: str | None, rebuild: Path | None) -> None:
    """``--suite rebalance``: its own runner and result files (the other suites' options do not apply)."""
    from pyrallel_tools.benchmark.rebalance import RebalancePlan, run_rebalance
    from pyrallel_tools.benchmark.rebalance_report import markdown as rebalance_markdown
    from pyrallel_tools.kafka_pairs import parse_kafka_pairs

    if profile or rebuild is not None:
        raise click.UsageError("--profile and --rebuild do not apply to --suite rebalance")
    if not bootstrap_servers:
        raise click.UsageError("--bootstrap-servers (or PYRALLEL_BOOTSTRAP_SERVERS) is required")
    try:
        properties = tuple(parse_kafka_pairs(kafka).items())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kafka") from exc
    plan = RebalancePlan(repetitions=repetitions, kafka=properties)
    try:
        report = run_rebalance(bootstrap_servers, plan, out, run_dir / "rebalance")
    except (LocalKafkaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(rebalance_markdown(report))
    click.echo(f"Results written to {out.resolve()} (rebalance-latest.json, rebalance-latest.md) in "
               f"{report.duration_s:.0f} s")


def _batch(bootstrap_servers: str | None, out: Path) -> None:
    """``--suite batch``: its own runner and result files (the other suites' options do not apply)."""
    from pyrallel_tools.benchmark.batch import BatchPlan, markdown, run_batch_bench

    if not bootstrap_servers:
        raise click.UsageError("--bootstrap-servers (or PYRALLEL_BOOTSTRAP_SERVERS) is required")
    try:
        report = run_batch_bench(bootstrap_servers, BatchPlan(), out)
    except (LocalKafkaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(markdown(report))
    click.echo(f"Results written to {out.resolve()} (batch-latest.json, batch-latest.md) in {report.duration_s:.0f} s")


def _recovery(bootstrap_servers: str | None, kills: int, default_kills: int, broker_restart_every: int,
              kafka_run_dir: Path | None, contenders: tuple[str, ...], out: Path, run_dir: Path) -> None:
    """``--suite recovery``: its own runner and result files (the other suites' options do not apply)."""
    from pyrallel_tools.benchmark.recovery import ALL_CONTENDERS, RecoveryPlan, run_recovery
    from pyrallel_tools.benchmark.recovery import markdown as recovery_markdown
    from pyrallel_tools.localkafka.cluster import default_run_dir

    if not bootstrap_servers:
        raise click.UsageError("--bootstrap-servers (or PYRALLEL_BOOTSTRAP_SERVERS) is required")
    plan = RecoveryPlan(kills=kills, default_kills=default_kills, broker_restart_every=broker_restart_every,
                        contenders=contenders or ALL_CONTENDERS)
    try:
        report = run_recovery(bootstrap_servers, plan, out, run_dir / "recovery", kafka_run_dir or default_run_dir())
    except (LocalKafkaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(recovery_markdown(report))
    click.echo(f"Results written to {out.resolve()} (recovery-latest.json, recovery-latest.md) in "
               f"{report.duration_s:.0f} s")


def _scale(bootstrap_servers: str | None, out: Path, run_dir: Path, rebuild: Path | None) -> None:
    """``--suite scale``: its own runner and result files (the other suites' options do not apply)."""
    from pyrallel_tools.benchmark.scale import ScalePlan, run_scale
    from pyrallel_tools.benchmark.scale_report import markdown as scale_markdown
    from pyrallel_tools.benchmark.scale_report import rebuild_scale_outputs

    try:
        if rebuild is not None:
            click.echo(scale_markdown(rebuild_scale_outputs(rebuild, out)))
            return
        if not bootstrap_servers:
            raise click.UsageError("--bootstrap-servers (or PYRALLEL_BOOTSTRAP_SERVERS) is required")
        report = run_scale(bootstrap_servers, ScalePlan(), out, run_dir / "scale")
    except (LocalKafkaError, ResultError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(scale_markdown(report))
    click.echo(f"Results written to {out.resolve()} (scale-latest.json, scale-latest.md, scale-*.png) in "
               f"{report.duration_s:.0f} s")
