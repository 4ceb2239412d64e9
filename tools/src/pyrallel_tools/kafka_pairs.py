"""``--kafka KEY=VALUE`` options: the one parser of the tools' extra librdkafka properties.

Used by ``pyrallel consume``, ``pyrallel scenario run`` and ``pyrallel bench --suite rebalance`` (and its member
processes), on the calling thread. The benchmark harness has its own copy: it runs under peers' interpreters
where this package is not installed, and imports nothing outside the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable


def parse_kafka_pairs(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` items as a dict, keys and values stripped; ValueError naming the first item without ``=``
    or without a key. A later item for the same key wins."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--kafka expects KEY=VALUE (a librdkafka property's NAME=VALUE), got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs
