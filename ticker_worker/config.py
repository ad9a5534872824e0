"""Settings from the environment and a `.env` file (DESIGN 4.5); built once, never at import."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KITE_API_ROOT = "https://api.kite.trade"
KITE_WS_ROOT = "wss://ws.kite.trade"
KITE_LOGIN_URL = "https://kite.zerodha.com/connect/login"
#: Where `accounts login` listens for Kite's redirect; register it as the app's redirect URL.
DEFAULT_REDIRECT_URL = "http://127.0.0.1:8766/kite/callback"
STATE_DIR = ".ticker-worker"  # `ticker-worker up`'s folder: credentials, embedded servers


class Settings(BaseSettings):
    """Every knob of the service. Field names map to upper-case environment variables."""

    # `.env` wins over the URLs `ticker-worker up` wrote for the embedded servers it runs.
    model_config = SettingsConfigDict(env_file=(f"{STATE_DIR}/stack.env", ".env"),
                                      extra="ignore", populate_by_name=True)

    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/ticker_worker"
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str = ""
    celery_result_backend: str = ""
    kite_api_root: str = KITE_API_ROOT
    kite_ws_root: str = KITE_WS_ROOT
    ticker_redis_prefix: str = "ticker:nifty"
    holder_http_port: int = 8080
    holder_http_host: str = "0.0.0.0"
    flower_port: int = 5555
    flower_basic_auth: str = ""
    environment: str = "development"
    log_format: str = Field(default="text", pattern="^(text|json)$")
    log_level: str = "INFO"

    # Kite limits; lowering them is how tests and demos exercise a full house cheaply.
    max_tokens_per_connection: int = Field(default=3000, ge=1, le=3000)
    max_connections_per_account: int = Field(default=3, ge=1, le=3)

    # Holder timing.
    reconcile_interval: float = Field(default=5.0, gt=0, le=5.0)
    stale_after: float = Field(default=5.0, gt=0)
    reconnect_max_delay: float = Field(default=30.0, gt=0)
    tick_flush_interval: float = Field(default=1.0, gt=0)
    last_tick_flush_interval: float = Field(default=15.0, gt=0)
    subscribe_batch_size: int = Field(default=1000, ge=1, le=3000)
    # Ticks per message on `{prefix}:ticks`: 0 publishes one Kite frame per message (DESIGN
    # 4.3); N cuts a big frame into arrays of at most N ticks, in order, so the first ticks of
    # a step's later frames need not wait for the whole of the earlier ones.
    tick_message_ticks: int = Field(default=0, ge=0, le=3000)
    # A new subscription's first tick is its acknowledgement: re-sent once after this long,
    # then shown as awaiting its first tick (DESIGN 3.7).
    ack_timeout: float = Field(default=3.0, gt=0)
    # The active holder's lease in Postgres: a standby takes over once it has not been renewed
    # for this long (judged by the database's clock).
    lease_ttl: float = Field(default=3.0, gt=0.5)

    # Backfill defaults.
    backfill_interval: str = "minute"
    backfill_days: int = Field(default=5, ge=1, le=2000)
    historical_rate_per_second: int = Field(default=3, ge=1)

    # Daily login (issue 10): Kite's login page, our callback, the key for api secrets at rest.
    kite_login_url: str = KITE_LOGIN_URL
    kite_redirect_url: str = DEFAULT_REDIRECT_URL
    ticker_secret_key: SecretStr = SecretStr("")
    mock_outside_market_hours: bool = False
    # `exchange`: backfills count the exchanges' real sessions and holidays. `always-open`: every
    # minute is in session, as the simulator's default market is (`up` sets it for its simulator).
    market_hours: str = Field(default="exchange", pattern="^(exchange|always-open)$")

    @model_validator(mode="after")
    def _derive_celery_urls(self) -> Settings:
        if not self.celery_broker_url:
            self.celery_broker_url = self.redis_url
        if not self.celery_result_backend:
            # Results live on Redis even when the broker is RabbitMQ.
            broker_is_redis = self.celery_broker_url.startswith(("redis://", "rediss://"))
            self.celery_result_backend = (self.celery_broker_url if broker_is_redis
                                          else self.redis_url)
        return self

    @property
    def uses_simulator(self) -> bool:
        """True when Kite endpoints point anywhere but Kite's real hosts."""
        return self.kite_ws_root != KITE_WS_ROOT


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return Settings()
