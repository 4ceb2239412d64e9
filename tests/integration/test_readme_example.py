"""The README's example runs as written (only the address and topic are swapped for the test's)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pyrallel_tools.localkafka.topics import produce_keyed

pytestmark = pytest.mark.integration


def test_readme_example_handles_ten_thousand_records(
    kafka_bootstrap: str, new_topic: Callable[[int], str], tmp_path: Path
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example is not None
    topic = new_topic(8)
    produce_keyed(kafka_bootstrap, topic, 10_000, keys=100)
    code = example.group(1).replace('"127.0.0.1:9092"', repr(kafka_bootstrap)).replace('["orders"]', repr([topic]))
    script = tmp_path / "example.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "handled=10000" in run.stdout
