"""Connecting to the Kubernetes API server: one lightkube ``Client`` per thread, and one tuple of what can fail.

Called by every other module of the package and by the ``pyrallel controller`` commands. A client is made per
thread (the Lease's, each watch's, the loop's) rather than shared: the HTTP client underneath keeps a connection
pool that is not documented as thread-safe, and a watch holds one connection for minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx2
from lightkube import ApiError, Client, ConfigError, KubeConfig

FIELD_MANAGER = "pyrallel-controller"

KUBE_ERRORS: tuple[type[Exception], ...] = (httpx2.HTTPError, OSError)
"""What a call to the API server may raise: ``ApiError`` (an answer with an error status, a subclass of
``httpx2.HTTPStatusError``) and transport errors (refused, timed out, TLS)."""


class KubeSetupError(RuntimeError):
    """No usable configuration: no kubeconfig file, or not running in a pod with a service account."""


def load_config(kubeconfig: Path | None = None) -> KubeConfig:
    """The kubeconfig file given, else the in-cluster service account / ``$KUBECONFIG`` / ``~/.kube/config``
    (lightkube's ``KubeConfig.from_env``)."""
    try:
        if kubeconfig is not None:
            return KubeConfig.from_file(kubeconfig)
        return KubeConfig.from_env()
    except (ConfigError, OSError, ValueError) as exc:
        where = str(kubeconfig) if kubeconfig else "the service account, $KUBECONFIG or ~/.kube/config"
        raise KubeSetupError(f"no Kubernetes configuration from {where}: {exc}") from exc


def client_factory(config: KubeConfig, namespace: str, timeout_s: float = 10.0) -> Callable[[], Client]:
    """Makes clients of ``config`` for ``namespace``; each call a new one (one per thread)."""

    def make() -> Client:
        return Client(config, namespace=namespace, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(timeout_s))

    return make


def describe(exc: BaseException) -> str:
    """One line for an API failure: the server's status message, or the transport error."""
    if isinstance(exc, ApiError):
        status = exc.status
        return f"HTTP {status.code} {status.reason or ''}: {status.message}".replace("  ", " ")
    return f"{type(exc).__name__}: {exc}"


def is_status(exc: BaseException, *codes: int) -> bool:
    """An answer with one of ``codes``; also a non-JSON one (``404 page not found`` for an API version the server
    does not serve), which lightkube raises as a plain ``httpx2.HTTPStatusError``."""
    if isinstance(exc, ApiError):
        return exc.status.code in codes
    return isinstance(exc, httpx2.HTTPStatusError) and exc.response.status_code in codes
