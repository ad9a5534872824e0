"""The holder's HTTP face: GET /health (DESIGN 4.8) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Snapshot = Callable[[], dict[str, Any]]


class HolderCollector(Collector):
    """Metric values generated from the latest snapshot at scrape time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        doc = self.snapshot()
        ticker = doc["ticker"]
        healthy = GaugeMetricFamily("ticker_account_healthy", "1 if placement may use the account",
                                    labels=["account"])
        used = GaugeMetricFamily("ticker_account_instruments", "Instruments on the account",
                                 labels=["account"])
        conn_up = GaugeMetricFamily("ticker_connection_up", "1 if the WebSocket is open",
                                    labels=["account", "connection"])
        conn_tokens = GaugeMetricFamily("ticker_connection_instruments",
                                        "Instruments on the connection",
                                        labels=["account", "connection"])
        reconnects = CounterMetricFamily("ticker_connection_reconnects", "Reconnect attempts",
                                         labels=["account", "connection"])
        expiry = GaugeMetricFamily("ticker_account_token_expiry_seconds",
                                   "Seconds until the access token expires (06:00 IST)",
                                   labels=["account"])
        refused = CounterMetricFamily("ticker_connection_refused",
                                      "Tokens Kite refused on the connection (error frames)",
                                      labels=["account", "connection"])
        for a in ticker["accounts"]:
            healthy.add_metric([a["name"]], 1.0 if a["healthy"] else 0.0)
            used.add_metric([a["name"]], a["used"])
            if a.get("token_expires_in") is not None:
                expiry.add_metric([a["name"]], a["token_expires_in"])
            for c in a["connections"]:
                labels = [a["name"], str(c["index"])]
                conn_up.add_metric(labels, 1.0 if c["connected"] else 0.0)
                conn_tokens.add_metric(labels, c["tokens"])
                reconnects.add_metric(labels, c["reconnects"])
                refused.add_metric(labels, c["refused"])
        yield from (healthy, used, expiry, conn_up, conn_tokens, reconnects, refused)
        role = GaugeMetricFamily("ticker_holder_active", "1 if this holder holds the lease")
        role.add_metric([], 1.0 if doc["role"] == "active" else 0.0)
        yield role
        holder = doc["holder"]
        yield GaugeMetricFamily("ticker_holder_epoch",
                                "The lease epoch this holder holds (0: none)",
                                value=holder["epoch"] or 0)
        yield CounterMetricFamily("ticker_holder_takeovers", "Times this holder took the lease",
                                  value=holder["takeovers"])
        yield GaugeMetricFamily("ticker_awaiting_first_tick",
                                "Placed instruments re-sent once and still without a first tick",
                                value=ticker["awaiting_first_tick"])
        yield GaugeMetricFamily("ticker_open_gaps", "Instruments silent since a fault, not yet "
                                "ticking again", value=ticker["open_gaps"])
        yield CounterMetricFamily("ticker_ticks", "Ticks published", value=ticker["ticks_total"])
        yield CounterMetricFamily("ticker_publish_failures", "Frames Redis did not take",
                                  value=ticker["publish_failures"])
        yield GaugeMetricFamily("ticker_ticks_per_second", "Ticks per second, last interval",
                                value=ticker["ticks_per_second"])
        age = ticker["last_tick_age"]
        yield GaugeMetricFamily("ticker_last_tick_age_seconds", "Seconds since the newest tick",
                                value=age if age is not None else float("nan"))
        yield GaugeMetricFamily("ticker_tick_queue", "Frames waiting to be published",
                                value=ticker["queue"])
        decoder = GaugeMetricFamily("ticker_tick_decoder", "1 for the tick encoder in use",
                                    labels=["decoder"])
        decoder.add_metric([ticker.get("decoder", "python")], 1.0)
        yield decoder
        yield CounterMetricFamily("ticker_frames_fallback",
                                  "Malformed frames the C encoder passed to the Python path",
                                  value=ticker.get("frames_fallback", 0))
        yield CounterMetricFamily("ticker_frames_rejected", "Malformed frames dropped",
                                  value=ticker.get("frames_rejected", 0))
        yield GaugeMetricFamily("ticker_outbox_backlog", "Events not yet delivered",
                                value=doc["outbox_backlog"])
        subs = GaugeMetricFamily("ticker_subscriptions", "Subscriptions by status",
                                 labels=["status"])
        for status, n in doc["subscriptions"].items():
            subs.add_metric([status], n)
        yield subs
        yield GaugeMetricFamily("ticker_reconcile_seconds", "Duration of the last reconcile",
                                value=doc["reconcile"]["last_seconds"])
        yield GaugeMetricFamily("ticker_healthy", "1 if the holder is healthy",
                                value=1.0 if doc["status"] == "healthy" else 0.0)


def build_app(snapshot: Snapshot) -> web.Application:
    """The aiohttp application serving /health and /metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HolderCollector(snapshot))

    async def health(_: web.Request) -> web.Response:
        doc = snapshot()
        return web.Response(body=orjson.dumps(doc), content_type="application/json",
                            status=200 if doc["status"] == "healthy" else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
