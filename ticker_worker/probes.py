"""Readiness probes for `ticker-worker up`: is a port taken, what does a URL answer, does a
Celery node answer a ping, is the broker reachable, is Flower receiving the workers' events,
what does the holder say about itself."""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request

import orjson

from ticker_worker.supervise import SupervisorError


def port_in_use(port: int) -> bool:
    """True when something listens on the port (any interface)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def http_get(url: str, timeout: float = 2.0,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class CeleryPing:
    """Pings one Celery node by name over the broker (a context manager owning the client)."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self.app = Celery(broker=broker_url)

    def __call__(self, node: str) -> list[object]:
        replies: list[object] = self.app.control.ping([node], timeout=1.0)
        return replies

    def __enter__(self) -> CeleryPing:
        return self

    def __exit__(self, *_: object) -> None:
        self.app.close()


def check_broker(url: str) -> str:
    """Connect to the Celery broker once; its URL without the password, or a clear error."""
    from kombu.connection import Connection

    with Connection(url, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
        shown = str(conn.as_uri())  # masks the password
        try:
            conn.ensure_connection(max_retries=1)
        except Exception as exc:  # noqa: BLE001 - any failure here means "not reachable"
            raise SupervisorError(f"cannot reach the Celery broker {shown} ({exc}). Is it "
                                  "running, and is CELERY_BROKER_URL right?") from None
    return shown


def flower_hears(url: str, auth: str, nodes: list[str]) -> bool:
    """True once Flower's event state knows every worker node (from their heartbeats)."""
    header = "Basic " + base64.b64encode(auth.encode()).decode()
    status, body = http_get(f"{url}/workers?json=1", headers={"Authorization": header})
    return status == 200 and set(nodes) <= {w["hostname"] for w in orjson.loads(body)["data"]}


def holder_status(url: str) -> str | None:
    """The holder's self-reported status, or None while it does not answer."""
    try:
        _, body = http_get(url)
        return str(orjson.loads(body)["status"])
    except (OSError, ValueError, KeyError):
        return None
