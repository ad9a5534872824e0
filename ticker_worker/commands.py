"""The command handlers behind the Celery tasks: validate, write desired state, nudge the holder.

Validation happens before any write, so bad input changes nothing. Each write is a single
statement (atomic on its own, so the connection runs in autocommit: fewer round trips) that
carries its own NOTIFY, which Postgres delivers only when the statement commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from ticker_worker.core.model import Status, parse_mode, parse_token, parse_token_list
from ticker_worker.db import instruments, subscriptions
from ticker_worker.db.subscriptions import Outcome
from ticker_worker.errors import InstrumentExpired, InvalidRequest, UnknownInstrument


def _connect(engine: Engine) -> Connection:
    """An autocommit connection: every write below is one self-contained statement."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


SYNC_HINT = "the instrument registry is empty: run `ticker-worker instruments sync` first"


def _unknown(conn: Connection, token: int, registry_empty: bool | None = None) -> UnknownInstrument:
    if registry_empty is None:
        registry_empty = instruments.count(conn) == 0
    why = SYNC_HINT if registry_empty else "not in the instrument registry"
    return UnknownInstrument(f"unknown instrument {token}: {why}")


def _check_subscribable(conn: Connection, tokens: Sequence[int]) -> dict[int, InvalidRequest]:
    """token -> error for each token that is unknown or expired."""
    known = instruments.lookup(conn, tokens)
    today = instruments.today_ist()
    errors: dict[int, InvalidRequest] = {}
    registry_empty = not known and bool(tokens) and instruments.count(conn) == 0
    for token in tokens:
        row = known.get(token)
        if row is None:
            errors[token] = _unknown(conn, token, registry_empty)
        elif not row.listed or (row.expiry is not None and row.expiry < today):
            when = f" on {row.expiry}" if row.expiry else ""
            errors[token] = InstrumentExpired(
                f"instrument {token} ({row.exchange}:{row.tradingsymbol}) expired{when}"
            )
    return errors


def _outcome(conn: Connection, token: int, changed: bool) -> Outcome:
    mode, status, _ = subscriptions.current(conn, [token]).get(token, (None, Status.REMOVED, False))
    return Outcome(token, mode, status, changed)


def subscribe(engine: Engine, instrument_token: Any, mode: Any = "full") -> dict[str, object]:
    """Want one instrument in `mode`."""
    token, parsed_mode = parse_token(instrument_token), parse_mode(mode)
    with _connect(engine) as conn:
        errors = _check_subscribable(conn, [token])
        if errors:
            raise errors[token]
        changed = subscriptions.upsert_wanted(conn, [token], parsed_mode)
        if token in changed:  # the common case answers without another round trip
            return Outcome(token, *changed[token], changed=True).as_dict()
        return _outcome(conn, token, False).as_dict()


def subscribe_many(
    engine: Engine, instrument_tokens: Any, mode: Any = "full"
) -> dict[str, list[Any]]:
    """Want many instruments in one transaction; report per-token rejections."""
    items, parsed_mode = parse_token_list(instrument_tokens), parse_mode(mode)
    rejected: list[dict[str, Any]] = []
    valid: list[int] = []
    seen: set[int] = set()
    for item in items:
        try:
            token = parse_token(item)
        except InvalidRequest as exc:
            rejected.append({"instrument_token": item, "error": str(exc)})
            continue
        if token not in seen:
            seen.add(token)
            valid.append(token)
    with _connect(engine) as conn:
        errors = _check_subscribable(conn, valid)
        rejected += [{"instrument_token": t, "error": str(e)} for t, e in errors.items()]
        accepted = [t for t in valid if t not in errors]
        subscriptions.upsert_wanted(conn, accepted, parsed_mode)
    return {"accepted": accepted, "rejected": rejected}


def unsubscribe(engine: Engine, instrument_token: Any) -> dict[str, object]:
    """Stop wanting one instrument. Unsubscribing what is not subscribed changes nothing."""
    token = parse_token(instrument_token)
    with _connect(engine) as conn:
        if not instruments.lookup(conn, [token]):
            raise _unknown(conn, token)
        changed = subscriptions.unwant(conn, token)
        if changed:
            return Outcome(token, *changed, changed=True).as_dict()
        return _outcome(conn, token, False).as_dict()


def set_mode(engine: Engine, instrument_token: Any, mode: Any) -> dict[str, object]:
    """Change the mode of a subscribed instrument."""
    token, parsed_mode = parse_token(instrument_token), parse_mode(mode)
    with _connect(engine) as conn:
        changed = subscriptions.change_mode(conn, token, parsed_mode)
        if changed:
            return Outcome(token, *changed, changed=True).as_dict()
        state = subscriptions.current(conn, [token]).get(token)
        if state is None or not state[2]:
            if not instruments.lookup(conn, [token]):
                raise _unknown(conn, token)
            raise InvalidRequest(f"instrument {token} is not subscribed: subscribe it first")
        return _outcome(conn, token, False).as_dict()
