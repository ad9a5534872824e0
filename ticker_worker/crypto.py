"""Api secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) keyed by `TICKER_SECRET_KEY`.

The key lives only in the environment; the database holds Fernet tokens, never plain text.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from ticker_worker.errors import SecretKeyError

HOW_TO_SET = (
    "generate one with `ticker-worker accounts new-secret-key` and export it as "
    "TICKER_SECRET_KEY (keep it outside the repository; every process that logs in needs it)"
)


def new_key() -> str:
    """A fresh random key, in the url-safe base64 form TICKER_SECRET_KEY takes."""
    return Fernet.generate_key().decode()


def _fernet(key: SecretStr) -> Fernet:
    value = key.get_secret_value().strip()
    if not value:
        raise SecretKeyError(f"TICKER_SECRET_KEY is not set, so api secrets cannot be stored or "
                             f"read: {HOW_TO_SET}")
    try:
        return Fernet(value.encode())
    except (ValueError, TypeError):
        raise SecretKeyError(f"TICKER_SECRET_KEY is not a valid key (32 url-safe base64-encoded "
                             f"bytes): {HOW_TO_SET}") from None


def encrypt(key: SecretStr, plaintext: str) -> str:
    """The Fernet token of `plaintext` under `key`."""
    return _fernet(key).encrypt(plaintext.encode()).decode()


def decrypt(key: SecretStr, token: str, what: str = "the api secret") -> str:
    """The plain text of a stored Fernet token; a clear SecretKeyError when the key is wrong."""
    fernet = _fernet(key)
    try:
        return fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            f"cannot decrypt {what}: TICKER_SECRET_KEY is not the key it was stored with "
            "(set the original key, or store the secret again with `ticker-worker accounts "
            "set-secret`)"
        ) from None
