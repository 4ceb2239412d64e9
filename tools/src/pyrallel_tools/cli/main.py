"""The ``pyrallel`` command: one entry point, one sub-command (or group) per concern.

Sub-commands are imported when they run, not when ``pyrallel`` starts: the local Kafka, the lab and the benchmark
pull in confluent-kafka, pydantic models and more, and ``pyrallel --help`` or ``pyrallel kafka status`` should
not pay for what they do not use. ``LazyGroup`` holds each command's module and its one-line summary; a unit test
keeps the summaries equal to the commands' own.
"""

from __future__ import annotations

import importlib
import logging

import click

COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("pyrallel_tools.cli.bench_cmd", "Run the benchmark: this library against its baseline and its peers."),
    "consume": ("pyrallel_tools.cli.bluegreen_cmds", "Consume with the library, log every handled record for the "
                "validator, inject faults on demand."),
    "controller": ("pyrallel_tools.cli.switch_cmds", "The switch controller as a service."),
    "demo": ("pyrallel_tools.cli.demo_cmd", "Switch blue -> green with each strategy on the local Kafka, validate "
             "every run, write the report."),
    "kafka": ("pyrallel_tools.cli.kafka_cmds", "Run a local Apache Kafka (KRaft, 1 or 3 brokers) on 127.0.0.1, "
              "resolved from Maven Central."),
    "k8s": ("pyrallel_tools.cli.k8s_cmds", "Run a local Kubernetes API server (etcd + kube-apiserver, no kubelet) on "
            "127.0.0.1."),
    "produce": ("pyrallel_tools.cli.bluegreen_cmds", "Produce numbered JSON records at a fixed rate over N keys; log "
                "every acknowledged send."),
    "registry": ("pyrallel_tools.cli.registry_cmds", "Run a local schema registry (Apicurio Registry, "
                 "Confluent-compatible API, in memory) on 127.0.0.1."),
    "report": ("pyrallel_tools.cli.report_cmd", "Write OUT/test-report.md and OUT/figures/*.png; unreadable run "
               "files are listed in the report."),
    "rollback": ("pyrallel_tools.cli.switch_cmds", "Give processing back to the color that was active before the "
                 "current one."),
    "scenario": ("pyrallel_tools.cli.scenario_cmds", "Blue/green scenario runs (see docs/tutorial/README.md)."),
    "switch": ("pyrallel_tools.cli.switch_cmds", "Switch processing to one color (stop the other first), with "
               "automatic rollback on failure."),
    "validate": ("pyrallel_tools.cli.bluegreen_cmds", "Judge a run: lost, pending, duplicates, order, dual-active "
                 "windows."),
}
"""Command name -> (module defining a click command of that name, its one-line summary)."""


class LazyGroup(click.Group):
    """A click group whose sub-commands in ``COMMANDS`` are imported when invoked; ``--help`` lists summaries."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module = importlib.import_module(COMMANDS[cmd_name][0])
        command = getattr(module, cmd_name.replace("-", "_"))
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name][0]}.{cmd_name} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in COMMANDS]
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None:
                rows.append((name, command.get_short_help_str(limit=formatter.width)))
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyrallel-consumer-tools", prog_name="pyrallel")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG instead of INFO.")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="PYRALLEL_LOG_FORMAT", default="text",
              show_default=True, help="Log lines as text or one JSON object per line (env PYRALLEL_LOG_FORMAT).")
def cli(verbose: bool, log_format: str) -> None:
    """Pyrallel Consumer: parallel Kafka processing and blue/green switching tools."""
    from pyrallel_consumer.observability.logging import configure_logging

    configure_logging("json" if log_format == "json" else "text", logging.DEBUG if verbose else logging.INFO)


@cli.command("config-reference")
def config_reference() -> None:
    """Print the ConsumerConfig reference table (the one in docs/configuration.md)."""
    from pyrallel_consumer.config_reference import reference_markdown

    click.echo(reference_markdown(), nl=False)


def main() -> None:
    cli()
