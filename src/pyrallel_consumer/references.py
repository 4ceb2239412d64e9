"""Import references: the ``"module:qualname"`` by which another process imports its own copy of an object.

A worker process of ``engine="process"`` cannot be handed the parent's objects (a handler may close over state, a
schema-registry deserializer holds an HTTP client), so it imports them by name. Used for the handler
(``execution/process/handler_ref.py``, on the event loop in the engine's ``start()``) and for the deserializers
(ConsumerConfig's validation, on the constructing thread); each worker process resolves them on its main thread.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def reference_of(target: object, what: str, hint: str) -> str:
    """``"module:qualname"`` of a top-level function or class that resolves back to ``target``; a string that looks
    like a reference is returned as it is, unresolved. ValueError naming ``what`` for anything else, ``hint``
    saying what to pass instead."""
    if isinstance(target, str):
        if not _REFERENCE.fullmatch(target):
            raise ValueError(f"{what} string {target!r} must look like 'package.module:name'")
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not callable(target) or not isinstance(module, str) or not isinstance(qualname, str):
        raise ValueError(f"{target!r} is not a {what} function; pass {hint}")
    ref = f"{module}:{qualname}"
    if "<" in qualname:
        raise ValueError(f"{what} {ref} cannot be imported by worker processes (a lambda or a nested function); "
                         "define it at the top level of a module")
    try:
        resolved = resolve(ref)
    except (ImportError, AttributeError, TypeError) as exc:
        raise ValueError(f"{what} {ref} cannot be imported by worker processes: {exc}") from exc
    if resolved is not target:
        raise ValueError(f"{what} {ref} cannot be imported by worker processes: that name is another object")
    return ref


def resolve(ref: str) -> Callable[..., object]:
    """The callable a reference names, imported; ImportError or AttributeError when it does not exist, TypeError
    when it is not callable (whatever else the module raises while it is imported propagates)."""
    module_name, _, qualname = ref.partition(":")
    target: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{ref} is not callable")
    return target
