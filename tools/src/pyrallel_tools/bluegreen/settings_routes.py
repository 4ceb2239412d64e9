"""Runtime knobs of the lab tools as HTTP resources: GET/PUT over a pydantic model on the control server.

Used by the load producer and the consume app (on their event loops) to change rates and faults during a run,
and by the CLI to describe a pydantic validation error in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pyrallel_consumer.control_server import HttpError, HttpServer, Request, Response

M = TypeVar("M", bound=BaseModel)


def add_settings_routes(
    server: HttpServer,
    path: str,
    current: Callable[[], M],
    apply: Callable[[M, Iterable[str]], None],
    extra: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """GET/PUT ``path`` over a pydantic model: PUT merges a partial JSON object, validates, then ``apply``s it.

    ``apply`` also gets the names the PUT body set, for one-shot knobs (e.g. a stall) that act when set.
    ``extra`` adds read-only fields (counters) to both answers.
    """

    def body() -> dict[str, Any]:
        return {**current().model_dump(), **(extra() if extra is not None else {})}

    async def get(request: Request) -> Response:
        request.allow_query()
        return Response(200, body())

    async def put(request: Request) -> Response:
        request.allow_query()
        update = request.json()
        if not isinstance(update, dict):
            raise HttpError(400, "the body must be a JSON object")
        model = current()
        try:
            new = type(model).model_validate({**model.model_dump(), **update})
        except ValidationError as exc:
            raise HttpError(400, describe_validation_error(exc)) from None
        apply(new, list(update))
        return Response(200, body())

    server.add_route("GET", path, get)
    server.add_route("PUT", path, put)


def describe_validation_error(exc: ValidationError) -> str:
    """'field: problem' per bad field, for HTTP answers and CLI errors alike."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )
