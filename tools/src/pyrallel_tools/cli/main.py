"""The ``pyrallel`` command: one entry point, one sub-group per concern."""

from __future__ import annotations

import logging

import click

from pyrallel_consumer import __version__
from pyrallel_consumer.config import reference_markdown
from pyrallel_consumer.observability.logging import configure_logging
from pyrallel_tools.cli.bench_cmd import bench
from pyrallel_tools.cli.bluegreen_cmds import consume, produce, validate
from pyrallel_tools.cli.demo_cmd import demo
from pyrallel_tools.cli.kafka_cmds import kafka
from pyrallel_tools.cli.report_cmd import report
from pyrallel_tools.cli.scenario_cmds import scenario
from pyrallel_tools.cli.switch_cmds import controller, rollback, switch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyrallel")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG instead of INFO.")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="PYRALLEL_LOG_FORMAT", default="text",
              show_default=True, help="Log lines as text or one JSON object per line (env PYRALLEL_LOG_FORMAT).")
def cli(verbose: bool, log_format: str) -> None:
    """Pyrallel Consumer: parallel Kafka processing and blue/green switching tools."""
    configure_logging("json" if log_format == "json" else "text", logging.DEBUG if verbose else logging.INFO)


@cli.command("config-reference")
def config_reference() -> None:
    """Print the ConsumerConfig reference table (the one in docs/configuration.md)."""
    click.echo(reference_markdown(), nl=False)


cli.add_command(kafka)
cli.add_command(switch)
cli.add_command(scenario)
cli.add_command(rollback)
cli.add_command(controller)
cli.add_command(demo)
cli.add_command(bench)
cli.add_command(report)
for _command in (produce, consume, validate):
    cli.add_command(_command)


def main() -> None:
    cli()
