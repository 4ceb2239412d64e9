"""Options and parsers shared by ``pyrallel switch``/``rollback``/``controller serve`` (switch_cmds) and the
Kubernetes side of ``pyrallel controller`` (controller_kube_cmds): defined once here, so the two modules do not
import each other and an option reads the same wherever it appears."""

from __future__ import annotations

from pathlib import Path

import click

from pyrallel_consumer.config import token_problem
from pyrallel_consumer.kafka.property_check import describe_refusal, librdkafka_refusal
from pyrallel_tools.kafka_pairs import parse_kafka_pairs

KUBECONFIG_OPTION = click.option(
    "--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Kubernetes: kubeconfig file (default: in-cluster service account, $KUBECONFIG, ~/.kube/config).")
NAMESPACE_OPTION = click.option("--namespace", default="default", show_default=True,
                                help="Kubernetes: namespace of the ConsumerDeployment.")


def urls(value: str | None) -> list[str]:
    """Comma-separated control URLs, stripped, without trailing slashes."""
    return [u.strip().rstrip("/") for u in (value or "").split(",") if u.strip()]


def check_token(_ctx: click.Context, _param: click.Parameter, token: str | None) -> str | None:
    """A token that could never match is refused here, not as a traceback when the server starts."""
    problem = token_problem(token) if token is not None else None
    if problem is not None:
        raise click.BadParameter(problem)
    return token


def kafka_pairs(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``--kafka KEY=VALUE`` (repeatable) as a dict, checked by librdkafka itself (a producer is built, never
    connected): an unknown property or a bad value is a usage error at start, not a retried failure later."""
    try:
        pairs = parse_kafka_pairs(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if pairs:
        reason = librdkafka_refusal("producer", pairs)
        if reason is not None:
            raise click.BadParameter(describe_refusal(pairs, reason))
    return pairs
