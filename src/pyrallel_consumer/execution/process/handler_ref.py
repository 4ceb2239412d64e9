"""Handlers by reference: the ``"module:qualname"`` a worker process imports its handler by.

The engine calls :func:`handler_reference` in ``start()`` (parent, on the event loop) to check, before any worker
starts, that the handler can be imported by name; each worker process calls :func:`load_handler` once, on its
main thread, before it reports ready. The naming rules are those of every import reference (``references.py``);
what is particular to a handler is that it must be synchronous.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from pyrallel_consumer.execution.engine import EngineError
from pyrallel_consumer.references import reference_of, resolve


def handler_reference(handler: object) -> str:
    """``"module:qualname"`` of a handler that worker processes can import; EngineError for anything else."""
    if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
        raise EngineError(
            f"{handler!r} is an async function; the process engine runs synchronous handlers "
            "def handle(record) -> None (use engine='async' for async handlers)"
        )
    try:
        return reference_of(handler, "handler", "a top-level def handle(record) or 'module:function'")
    except ValueError as exc:
        raise EngineError(str(exc)) from exc.__cause__


def load_handler(ref: str) -> Callable[..., object]:
    """The handler a worker runs; TypeError for an async function (an import string is not checked at start)."""
    handler = resolve(ref)
    if inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"{ref} is an async function; the process engine runs synchronous handlers (use engine='async')"
        )
    return handler
