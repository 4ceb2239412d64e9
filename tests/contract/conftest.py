"""The contract suite's event loops: the async engine's tests run on asyncio's loop and on uvloop's.

The library never creates a loop; an application may run it on uvloop (the optional extra ``uvloop``), so the
async engine's contract must hold there too. The process engine's tests run on asyncio's loop only: they take most
of the suite's time, and the loop side of that engine is the same ``call_soon_threadsafe`` hand-over the async
engine's uvloop runs already cover.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import uvloop

LOOP_FACTORIES: Mapping[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
_HERE = Path(__file__).parent


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], object]]:
    """pytest-asyncio's hook: every asynchronous test here is parametrized with both loops."""
    return LOOP_FACTORIES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the process engine's uvloop variants (see the module docstring)."""
    dropped = [item for item in items if _HERE in item.path.parents and _is_process_on_uvloop(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in gone]


def _is_process_on_uvloop(item: pytest.Item) -> bool:
    params = getattr(item, "callspec", None)
    if params is None:
        return False
    return (params.params.get("engine_name") == "process"
            and params.params.get("_asyncio_loop_factory") is LOOP_FACTORIES["uvloop"])
