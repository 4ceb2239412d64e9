"""The configuration reference table of docs/configuration.md, generated from ConsumerConfig so it cannot drift.

Called by ``pyrallel config-reference`` and by the test that checks the document holds the current table.
"""

from __future__ import annotations

from typing import Any

from pyrallel_consumer.config import ConsumerConfig
from pyrallel_consumer.record import Ordering


def _rule(info: Any) -> str:
    """The validation rule of a field, read from its constraints."""
    parts = []
    for item in info.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"),
                             ("max_length", "max length")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    annotation = str(info.annotation).replace("typing.", "")
    if "Literal" in annotation:
        parts.append("one of " + annotation.split("Literal[", 1)[1].rstrip("]").replace("'", ""))
    return ", ".join(parts) or "-"


def reference_markdown() -> str:
    """The configuration reference in docs/configuration.md, generated from the model so it cannot drift."""
    rows = [
        "| field | env var | type | default | rule | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, info in ConsumerConfig.model_fields.items():
        annotation = str(info.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        annotation = annotation.replace("pyrallel_consumer.record.", "").replace("pydantic.types.", "")
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = "`{}`" if name.endswith("kafka") else "host-pid" if name == "instance_id" else "-"
        else:
            value = info.default.value if isinstance(info.default, Ordering) else info.default
            default = f"`{value}`"
        if name == "ordering":
            annotation = "Ordering"
        if name.endswith("_deserializer"):
            annotation = "Deserializer | str | None"
        rule = _rule(info)
        if name == "ordering":
            rule = "one of key, partition, unordered"
        if name in ("topics", "dlq_topic"):
            rule = "valid Kafka topic names (1-249 of a-z A-Z 0-9 . _ -)"
        if name == "kafka":
            rule = "library-owned properties refused; enum properties checked"
        if name == "output_kafka":
            rule = "library-owned properties refused; checked by librdkafka"
        if name == "tracing_enabled":
            rule = "opentelemetry-api installed (the tracing extra)"
        if name.endswith("_deserializer"):
            rule = "callable, not a class; a 'module:attr' that imports; engine=process: importable by name"
        if name == "control_token":
            rule = "printable ASCII, not blank, no leading/trailing whitespace"
        if name == "control_host":
            rule = "min length 1; beyond loopback (127.0.0.0/8, ::1, localhost) needs control_token or control_insecure"
        cells = [f"`{name}`", f"`PYRALLEL_{name.upper()}`", f"`{annotation}`", default, rule, info.description or ""]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"

