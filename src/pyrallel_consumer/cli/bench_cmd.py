"""``pyrallel bench``: benchmarks against the local real broker, results under benchmarks/results/."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_consumer.benchmark.runner import run_core_benchmark
from pyrallel_consumer.localkafka.errors import LocalKafkaError


@click.command()
@click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS).")
@click.option("--records", type=click.IntRange(1000), default=100_000, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"),
              show_default=True)
def bench(bootstrap_servers: str, records: int, out: Path) -> None:
    """Sequential baseline vs the async engine (no-op; 5 ms sleep with 100 and 1,000 keys)."""
    try:
        result = run_core_benchmark(bootstrap_servers, records, out)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.table())
    click.echo(f"Results written to {out.resolve()}")
