"""The Pod's one HTTP server: /metrics, /healthz, /readyz, on a daemon thread of the main process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from jobqueue_worker.probes import Health

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never delays a probe."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log: the kubelet probes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _probe(check: Callable[[], tuple[bool, str]]) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        ok, reason = check()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [f"{reason}\n".encode()]

    return app


def wsgi_app(registry: CollectorRegistry, health: Health) -> WSGIApp:
    """Route the three paths; anything else is a 404."""
    routes = {"/metrics": make_wsgi_app(registry), "/healthz": _probe(health.alive), "/readyz": _probe(health.ready)}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"try /metrics, /healthz or /readyz\n"]
        return route(environ, start_response)

    return app


def serve(address: str, port: int, app: WSGIApp) -> WSGIServer:
    """Bind now (so a busy port fails at start) and serve on a daemon thread."""
    server = make_server(address, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="jobqueue-worker-http", daemon=True).start()
    return server
