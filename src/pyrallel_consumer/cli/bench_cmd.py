"""``pyrallel bench``: benchmarks against the local real broker, results under benchmarks/results/."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_consumer.benchmark.runner import run_core_benchmark, run_cpu_benchmark
from pyrallel_consumer.localkafka.errors import LocalKafkaError


@click.command()
@click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS).")
@click.option("--suite", type=click.Choice(["core", "cpu", "all"]), default="all", show_default=True,
              help="core: baseline vs async engine; cpu: CPU-bound handlers, process vs async engine.")
@click.option("--records", type=click.IntRange(1000), default=100_000, show_default=True,
              help="Records per topic of the core suite.")
@click.option("--cpu-records", type=click.IntRange(1000), default=12_000, show_default=True,
              help="Records of the cpu suite's cpu2ms topic (its no-op topic has five times as many).")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True,
              help="Worker processes of the process engine in the cpu suite.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"),
              show_default=True)
def bench(bootstrap_servers: str, suite: str, records: int, cpu_records: int, workers: int, out: Path) -> None:
    """Benchmarks on the local broker, each contender on the same pre-produced topic.

    core: sequential baseline vs the async engine (no-op; 5 ms sleep with 100 and 1,000 keys).
    cpu: cpu2ms (2 ms of pure Python per record): baseline, async engine, process engine; and the
    per-record IPC overhead of the process engine with a no-op handler.
    """
    try:
        if suite in ("core", "all"):
            click.echo(run_core_benchmark(bootstrap_servers, records, out).table())
        if suite in ("cpu", "all"):
            click.echo(run_cpu_benchmark(bootstrap_servers, cpu_records, out, workers=workers).table())
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Results written to {out.resolve()}")
