"""The Celery brokers the tests run on: Redis (the default) and RabbitMQ.

RabbitMQ is the machine's server on 127.0.0.1:5672 (guest/guest); this run gets a virtual host
of its own (`ticker_test<RUN_SUFFIX>`), created empty per session with `rabbitmqctl`, so that
parallel runs never share a queue. A test that takes the `broker` fixture runs once per broker;
without RabbitMQ its RabbitMQ run is skipped, and fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from tests.run import RUN_SUFFIX

AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
VHOST = f"ticker_test{RUN_SUFFIX}"
BROKERS = ("redis", "rabbitmq")


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"RabbitMQ is needed in CI: {why}")
    pytest.skip(f"RabbitMQ unavailable: {why}")


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def fresh_vhost(name: str = VHOST) -> str:
    """An empty RabbitMQ virtual host for this run; returns its amqp:// URL."""
    if shutil.which("rabbitmqctl") is None:
        _unavailable("rabbitmqctl is not installed")
    try:
        socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=2).close()
    except OSError as exc:
        _unavailable(f"nothing answers on {AMQP_HOST}:{AMQP_PORT} ({exc}); "
                     "`rabbitmq-server -detached` starts it")
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{name}"


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """This run's own, empty RabbitMQ virtual host."""
    return fresh_vhost()


@pytest.fixture(params=BROKERS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    """'redis' or 'rabbitmq': a test taking it runs on each broker."""
    return str(request.param)


def purge(url: str) -> None:
    """Drop every message left in our queues by an earlier test (the queues may not exist)."""
    from kombu import Connection

    with Connection(url) as conn:
        for name in ("celery", "backfill", "backfill_gaps"):
            channel = conn.channel()
            try:
                channel.queue_purge(name)
            except Exception:  # not declared yet: nothing to purge
                pass
            finally:
                channel.close()


@pytest.fixture
def broker_url(broker_kind: str, request: pytest.FixtureRequest) -> str:
    """The Celery broker URL of this run of the test, with empty queues (results: Redis)."""
    if broker_kind == "redis":
        request.getfixturevalue("redis_client")  # flushes the tests' Redis db
        return str(request.getfixturevalue("settings").redis_url)
    url = str(request.getfixturevalue("rabbitmq_url"))
    purge(url)
    return url
