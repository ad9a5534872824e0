"""Kite's login flow on the simulator: the login page, the redirect, and `/session/token`.

As on Kite: `GET /connect/login?v=3&api_key=K` shows a form (any user id, password and TOTP
pass); submitting it redirects to the app's redirect URL with `request_token`, `action=login`
and `status=success`; `POST /session/token` exchanges the request token, once, for an access
token if the checksum is SHA-256(api_key + request_token + api_secret); `DELETE` logs it out.
A key with no configured api secret accepts any checksum (development without secrets).
"""

from __future__ import annotations

import html
import secrets
from datetime import datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from ticker_worker.core.ist import IST
from ticker_worker.sim.state import SIMULATOR, error_response, json_response

INVALID_API_KEY = "Invalid `api_key`."


_FORM = """<!doctype html>
<html><head><title>Kite Connect (simulator) - Login</title></head>
<body><h1>Login to Kite (simulator)</h1>
<form method="post" action="/connect/login">
<input type="hidden" name="api_key" value="{api_key}">
<label>User ID <input id="userid" name="user_id" type="text" autocomplete="off"></label><br>
<label>Password <input id="password" name="password" type="password"></label><br>
<label>TOTP <input id="totp" name="totp" type="text" inputmode="numeric"></label><br>
<button id="login" type="submit">Login</button>
</form></body></html>
"""


def _known(request: web.Request, api_key: str) -> bool:
    sim = request.app[SIMULATOR]
    configured = sim.config.accounts
    return bool(api_key) and (
        configured is None or api_key in configured or api_key in sim.logins.api_secrets
    )


async def login_page(request: web.Request) -> web.Response:
    """`GET /connect/login?v=3&api_key=K`: the login form."""
    api_key = request.query.get("api_key", "")
    if not _known(request, api_key):
        return web.Response(status=400, text=INVALID_API_KEY)
    return web.Response(text=_FORM.format(api_key=html.escape(api_key)), content_type="text/html")


async def login_submit(request: web.Request) -> web.Response:
    """`POST /connect/login`: any credentials pass; redirect with a request token."""
    form = await request.post()
    api_key = str(form.get("api_key", ""))
    if not _known(request, api_key):
        return web.Response(status=400, text=INVALID_API_KEY)
    logins = request.app[SIMULATOR].logins
    token = logins.issue(api_key, str(form.get("user_id", "")) or "SIM0001")
    target = urlsplit(logins.redirect_for(api_key))
    params = urlencode({"action": "login", "type": "login", "status": "success",
                        "request_token": token})
    query = f"{target.query}&{params}" if target.query else params
    raise web.HTTPFound(urlunsplit(target._replace(query=query)))


async def create_session(request: web.Request) -> web.Response:
    """`POST /session/token`: exchange a request token for an access token."""
    sim = request.app[SIMULATOR]
    form = await request.post()
    api_key = str(form.get("api_key", ""))
    try:
        pending = sim.logins.redeem(api_key, str(form.get("request_token", "")),
                                    str(form.get("checksum", "")))
    except ValueError as exc:
        return error_response(403, "TokenException", str(exc))
    access_token = secrets.token_hex(16)
    sim.accounts.grant(api_key, access_token)
    now = datetime.fromtimestamp(sim.clock.now(), IST)
    return json_response({
        "user_type": "individual", "email": f"{pending.user_id.lower()}@example.com",
        "user_name": "Simulated Trader", "user_shortname": "Simulated", "broker": "ZERODHA",
        "exchanges": ["NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX"],
        "products": ["CNC", "NRML", "MIS", "BO", "CO"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"], "avatar_url": None,
        "user_id": pending.user_id, "api_key": api_key, "access_token": access_token,
        "public_token": secrets.token_hex(16), "refresh_token": "", "enctoken": "",
        "login_time": now.strftime("%Y-%m-%d %H:%M:%S"), "meta": {"demat_consent": "physical"},
    })


async def delete_session(request: web.Request) -> web.Response:
    """`DELETE /session/token?api_key=K&access_token=T`: invalidate the access token."""
    sim = request.app[SIMULATOR]
    api_key = request.query.get("api_key", "")
    access_token = request.query.get("access_token", "")
    if not sim.accounts.revoke(api_key, access_token):
        return error_response(403, "TokenException", "Incorrect `api_key` or `access_token`.")
    return json_response(True)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the login and session routes."""
    router.add_get("/connect/login", login_page)
    router.add_post("/connect/login", login_submit)
    router.add_post("/session/token", create_session)
    router.add_delete("/session/token", delete_session)
