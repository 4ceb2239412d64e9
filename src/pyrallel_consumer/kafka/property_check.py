"""Asks librdkafka whether it takes a set of properties, and says why not in terms of the user's properties.

Called by ConsumerConfig's validation (on the constructing thread) and, through ``clients``, when a client is
built at start. It builds throwaway clients, so it lives in the one package that builds confluent-kafka clients.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from pyrallel_consumer.observability.librdkafka_log import LIBRDKAFKA_LOGGER

_SECRET_HINTS = ("password", "secret", "sasl.oauthbearer.config", "key.pem", "token")
_CHECK_LOGGER = logging.getLogger(f"{LIBRDKAFKA_LOGGER}.check")
"""Takes the notes of the throwaway clients that check properties; the real client logs them again at start."""
_CHECK_LOGGER.addHandler(logging.NullHandler())
_CHECK_LOGGER.propagate = False


def is_secret_property(name: str) -> bool:
    return any(hint in name.lower() for hint in _SECRET_HINTS)


def reason_of(exc: BaseException) -> str:
    """librdkafka's own words for a refused configuration."""
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def librdkafka_refusal(kind: Literal["consumer", "producer"], conf: Mapping[str, Any]) -> str | None:
    """What librdkafka says about ``conf``, or None when it takes it.

    Creates a client without bootstrap servers (it never connects; about a millisecond) and closes it again:
    librdkafka itself judges property names, values and combinations, which no list kept here could. Called
    by ConsumerConfig's validation, on the constructing thread.
    """
    try:
        if kind == "consumer":
            Consumer({**conf, "logger": _CHECK_LOGGER}).close()
        else:
            Producer({**conf, "logger": _CHECK_LOGGER})  # destroyed at once: nothing references it
    except (KafkaException, TypeError, ValueError) as exc:
        return reason_of(exc)
    return None


def describe_refusal(properties: Mapping[str, str], reason: str) -> str:
    """librdkafka's ``reason`` to refuse ``properties``, naming the ones it mentions, with secret values masked.

    Used by ConsumerConfig's validation and by ``clients.librdkafka_config_error``.
    """
    reason = reason.strip()
    for name, value in properties.items():
        if is_secret_property(name) and value:
            reason = reason.replace(value, "***")
    named = [name for name in properties if name in reason]
    if named or len(properties) == 1:
        which = ", ".join(repr(name) for name in named or properties)
    else:  # e.g. a plugin that does not load: the reason names the plugin, not the property
        which = "one of " + ", ".join(repr(name) for name in properties)
    return f"librdkafka refuses {which}: {reason}"
