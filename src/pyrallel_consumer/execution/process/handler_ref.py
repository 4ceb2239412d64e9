"""Handlers by reference: the ``"module:qualname"`` a worker process imports its handler by.

The engine calls :func:`handler_reference` in ``start()`` (parent, on the event loop) to check, before any worker
starts, that the handler can be imported by name; each worker process calls :func:`load_handler` once, on its
main thread, before it reports ready.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable

from pyrallel_consumer.execution.engine import EngineError

_HANDLER_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def handler_reference(handler: object) -> str:
    """``"module:qualname"`` of a handler that worker processes can import; EngineError for anything else."""
    if isinstance(handler, str):
        if not _HANDLER_REF.fullmatch(handler):
            raise EngineError(f"handler string {handler!r} must look like 'package.module:function'")
        return handler
    if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
        raise EngineError(
            f"{handler!r} is an async function; the process engine runs synchronous handlers "
            "def handle(record) -> None (use engine='async' for async handlers)"
        )
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)
    if not callable(handler) or not isinstance(module, str) or not isinstance(qualname, str):
        raise EngineError(
            f"{handler!r} is not a handler function; pass a top-level def handle(record) or 'module:function'"
        )
    ref = f"{module}:{qualname}"
    if "<" in qualname:
        raise EngineError(
            f"handler {ref} cannot be imported by worker processes (a lambda or a nested function); "
            "define it at the top level of a module"
        )
    try:
        resolved = _resolve(ref)
    except (ImportError, AttributeError, TypeError) as exc:
        raise EngineError(f"handler {ref} cannot be imported by worker processes: {exc}") from exc
    if resolved is not handler:
        raise EngineError(f"handler {ref} cannot be imported by worker processes: that name is another object")
    return ref


def load_handler(ref: str) -> Callable[..., object]:
    """The handler a worker runs; TypeError for an async function (an import string is not checked at start)."""
    handler = _resolve(ref)
    if inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"{ref} is an async function; the process engine runs synchronous handlers (use engine='async')"
        )
    return handler


def _resolve(ref: str) -> Callable[..., object]:
    module_name, _, qualname = ref.partition(":")
    target: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{ref} is not callable")
    return target
