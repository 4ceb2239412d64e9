"""The HTTP control server every consumer runs when ``control_port`` is set: lifecycle commands and health probes.

``messages`` is the wire format, ``server`` the connection handling, ``lifecycle_routes`` the API. Applications and
tools add routes of their own to ``PyrallelConsumer.control_server`` with ``HttpServer.add_route``.
"""

from pyrallel_consumer.control_server.lifecycle_routes import (
    LifecycleControl,
    add_lifecycle_routes,
    create_control_server,
)
from pyrallel_consumer.control_server.messages import Handler, HttpError, Request, Response
from pyrallel_consumer.control_server.server import HttpServer

__all__ = [
    "Handler",
    "HttpError",
    "HttpServer",
    "LifecycleControl",
    "Request",
    "Response",
    "add_lifecycle_routes",
    "create_control_server",
]
