"""librdkafka's own lines while no broker answers: in Python logging, a few per kind and window, never on stderr.

The clients are the library's own (``KafkaClients``), pointed at a loopback port nobody listens on: real librdkafka,
real connection refusals, no broker needed. The budget is shortened to 1 line per 1 s window, so a count shows
within the test's bound even when librdkafka backs off between attempts.
"""

from __future__ import annotations

import logging
import time

import pytest

from pyrallel_consumer import ConsumerConfig, KafkaClients
from pyrallel_consumer.observability import librdkafka_log
from pyrallel_consumer.observability.librdkafka_log import LIBRDKAFKA_LOGGER
from pyrallel_tools.localkafka.ports import free_port

pytestmark = pytest.mark.integration


def test_an_unreachable_broker_gives_a_few_lines_per_window_and_a_count(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(librdkafka_log, "WINDOW_S", 1.0)
    monkeypatch.setattr(librdkafka_log, "BURST", 1)
    caplog.set_level(logging.INFO, logger=LIBRDKAFKA_LOGGER)
    config = ConsumerConfig(bootstrap_servers=f"127.0.0.1:{free_port()}", group_id="g", topics=["t"],
                            processing_guarantee="exactly_once", instance_id="logs-1")
    clients = KafkaClients()
    started = time.monotonic()
    consumer = clients.consumer(config, lambda _err, _partitions: None)
    producers = [clients.dead_letter_producer(config), clients.transactional_producer(config)]
    admin = clients.admin(config, lambda _err: None)
    consumer.subscribe(["t"])

    def lines(client: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == f"{LIBRDKAFKA_LOGGER}.{client}"]

    deadline = started + 20
    try:
        while not any("suppressed" in r.getMessage() for r in lines("consumer")) and time.monotonic() < deadline:
            consumer.poll(0.1)  # serves the consumer's log queue; the others' are served by their poll()
            for client in (*producers, admin):
                client.poll(0)
    finally:
        consumer.close()
        del producers, admin
    windows = int(time.monotonic() - started) + 1  # 1 s windows, each opened by a line: at most this many per kind

    counts = [r.getMessage() for r in lines("consumer") if "suppressed" in r.getMessage()]
    assert counts, f"no window of the consumer's lines was summed up within 20 s: {lines('consumer')}"
    assert all(int(line.split("suppressed ")[1].split()[0]) > 0 for line in counts)
    for client in ("consumer", "admin", "dlq", "transactions"):
        mine = lines(client)
        assert mine, f"nothing of the {client}'s connection failures reached {LIBRDKAFKA_LOGGER}.{client}"
        for kind in {(r.levelno, r.getMessage().split(" ", 1)[0]) for r in mine}:
            shown = [r for r in mine if (r.levelno, r.getMessage().split(" ", 1)[0]) == kind
                     and "suppressed" not in r.getMessage()]
            assert len(shown) <= windows, f"{client} {kind}: {len(shown)} lines in {windows} windows of 1 line"
    assert "Connection refused" not in capfd.readouterr().err, "librdkafka printed to stderr itself"
