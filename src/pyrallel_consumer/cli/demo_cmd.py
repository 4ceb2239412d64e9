"""``pyrallel demo``: the main job that ``make demo`` runs against the local broker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import click
from confluent_kafka import Consumer

from pyrallel_consumer.localkafka.errors import LocalKafkaError
from pyrallel_consumer.localkafka.topics import create_topic, produce_keyed


@click.command()
@click.option("--bootstrap-servers", envvar="PYRALLEL_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap address (env PYRALLEL_BOOTSTRAP_SERVERS).")
@click.option("--records", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--keys", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--partitions", type=click.IntRange(1), default=8, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report/demo.json"),
              show_default=True, help="Where the JSON result is written.")
def demo(bootstrap_servers: str, records: int, keys: int, partitions: int, out: Path) -> None:
    """Produce keyed records, consume them all, print counts and throughput."""
    topic = f"demo-{uuid.uuid4().hex[:8]}"
    try:
        create_topic(bootstrap_servers, topic, partitions)
        t0 = time.perf_counter()
        acked = produce_keyed(bootstrap_servers, topic, records, keys)
        produce_s = time.perf_counter() - t0
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"{topic}-group",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    consumed = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 120
    try:
        while consumed < acked and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    consumed += 1
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    consume_s = time.perf_counter() - t0
    result = {
        "topic": topic,
        "produced": acked,
        "consumed": consumed,
        "produce_records_per_s": round(acked / produce_s),
        "consume_records_per_s": round(consumed / consume_s),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result, indent=2))
    click.echo(f"Result written to {out.resolve()}")
    if consumed != acked:
        raise click.ClickException(f"consumed {consumed} of {acked} records")
