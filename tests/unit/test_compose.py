"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every command is a
real `ticker-worker` subcommand or a Celery invocation of our app, healthchecks use our CLI,
no secret is written inline, and the image holds what the commands read.

The structural checks need a YAML parser; without PyYAML they skip and say so. The text checks
(secrets, Dockerfile) always run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|BASIC_AUTH|PASSWD", re.I)
REFERENCE = re.compile(r"^\$\{[A-Z_]+(:?[?-][^}]*)?\}$")
URL_CREDENTIALS = re.compile(r"://[^:/@\s]+:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML is not installed: the compose structure checks need it")
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from our image."""
    return {n: s for n, s in compose["services"].items() if "build" in s}


def commands() -> dict[str, click.Command]:
    from ticker_worker.cli import cli

    ctx = click.Context(cli)
    found = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


def check_ticker_worker(argv: list[str]) -> None:
    """Resolve the subcommand path and parse its options exactly as click would."""
    assert argv[0] == "ticker-worker", argv
    cmd: click.Command = click.Group(commands=commands())
    args = argv[1:]
    while isinstance(cmd, click.Group) and args and args[0] in cmd.commands:
        cmd, args = cmd.commands[args[0]], args[1:]
    assert not isinstance(cmd, click.Group), f"{argv}: no such subcommand"
    cmd.make_context(argv[0], list(args))  # raises UsageError on an unknown option


def check_celery(argv: list[str]) -> str:
    """`celery -A ticker_worker <sub> ...`; returns the subcommand."""
    assert argv[:3] == ["celery", "-A", "ticker_worker"], argv
    assert argv[3] in {"worker", "flower", "inspect"}, argv
    return argv[3]


def argv_of(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def test_every_command_is_real(compose: dict[str, Any]) -> None:
    for name, service in ours(compose).items():
        argv = argv_of(service["command"])
        if argv[0] == "ticker-worker":
            check_ticker_worker(argv)
        else:
            check_celery(argv)
        assert name


def test_workers_consume_every_routed_queue(compose: dict[str, Any]) -> None:
    import celeryconfig

    routed = {celeryconfig.task_default_queue} | {
        r["queue"] for r in celeryconfig.task_routes.values()} | {
        q.name for q in celeryconfig.task_queues}
    consumed = set()
    for service in ours(compose).values():
        argv = argv_of(service["command"])
        if argv[:4] == ["celery", "-A", "ticker_worker", "worker"]:
            consumed.add(argv[argv.index("-Q") + 1])
    assert consumed == routed
    assert {"worker", "backfill-worker", "gap-backfill-worker"} <= set(compose["services"])
    assert "backfill_gaps" in consumed


def test_expected_services_and_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert argv_of(services["migrate"]["command"]) == ["ticker-worker", "db", "upgrade"]
    assert argv_of(services["holder"]["command"]) == ["ticker-worker", "holder"]
    assert argv_of(services["sim"]["command"])[:2] == ["ticker-worker", "sim"]
    assert services["sim"]["profiles"] == ["dev"]
    assert check_celery(argv_of(services["flower"]["command"])) == "flower"
    assert {"postgres", "redis"} <= set(services)


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    assert test[0] == "CMD", test
    return list(test[1:])


def test_healthchecks_use_our_cli(compose: dict[str, Any]) -> None:
    services = ours(compose)
    assert healthcheck_argv(services["holder"]) == ["ticker-worker", "health"]
    for name, service in services.items():
        if name == "migrate":
            assert "healthcheck" not in service  # a one-shot
            continue
        argv = healthcheck_argv(service)
        if argv[0] == "ticker-worker":
            check_ticker_worker(argv)
        elif argv[0] == "celery":
            assert check_celery(argv) == "inspect", argv
        else:  # an HTTP probe with the image's own Python (no curl in -slim)
            assert argv[:2] == ["python", "-c"], (name, argv)
            assert re.search(r"http://127\.0\.0\.1:\d+/(healthcheck|_sim/stats|health)'",
                             argv[2]), (name, argv)
    assert "/healthcheck" in " ".join(healthcheck_argv(services["flower"]))


def test_two_holders_one_active_one_standby(compose: dict[str, Any]) -> None:
    """Two holder processes against the same Postgres and Redis (the lease picks the active
    one), each with its own published port for /health and /metrics."""
    services = compose["services"]
    holders = {n: s for n, s in ours(compose).items()
               if argv_of(s["command"]) == ["ticker-worker", "holder"]}
    assert set(holders) == {"holder", "holder-2"}
    envs = [environment(s) for s in holders.values()]
    assert envs[0]["DATABASE_URL"] == envs[1]["DATABASE_URL"]
    assert envs[0]["REDIS_URL"] == envs[1]["REDIS_URL"]
    published = [p.rsplit(":", 2)[-2] for s in holders.values() for p in s["ports"]]
    assert len(published) == 2 and len(set(published)) == 2, published
    deps = services["holder-2"]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert "/health" in " ".join(healthcheck_argv(services["holder-2"]))


def test_startup_order_uses_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("holder", "worker", "backfill-worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert spec["condition"] in {"service_healthy", "service_completed_successfully"}, (
                name, dep)
    assert services["holder"]["depends_on"]["sim"]["required"] is False


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_secrets_come_from_the_env_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ours(compose) or name == "postgres":
            assert service["env_file"] == ".env", name
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert REFERENCE.match(value), f"{name}: {key} is written inline"
            for password in URL_CREDENTIALS.findall(value):
                assert password.startswith("${"), f"{name}: {key} has an inline password"


def test_no_secret_looking_value_inline() -> None:
    """Text-level, so it runs without a YAML parser too."""
    for line in COMPOSE.read_text().splitlines():
        code = line.split("#", 1)[0]
        match = re.search(r"([A-Za-z_]+)\s*[:=]\s*\"?([^\"\s]+)", code)
        if match and SECRET_NAME.search(match.group(1)):
            assert match.group(2).startswith("${"), line
        for password in URL_CREDENTIALS.findall(code):
            assert password.startswith("${"), line


def test_env_example_holds_placeholders_only() -> None:
    example = (ROOT / ".env.example").read_text()
    for line in example.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if SECRET_NAME.search(key):
            assert "replace-with" in value, line
    code = "\n".join(line.split("#", 1)[0] for line in COMPOSE.read_text().splitlines())
    referenced = set(re.findall(r"\$\{([A-Z_]+)", code))
    defined = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    assert referenced <= defined
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def dockerfile() -> list[str]:
    return [line.strip() for line in DOCKERFILE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_base_user_and_install() -> None:
    lines = dockerfile()
    assert lines[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    install = next(i for i, line in enumerate(lines) if re.match(r"RUN pip install \.$", line))
    assert install < next(i for i, line in enumerate(lines) if line.startswith("USER "))


def test_dockerfile_copies_what_the_commands_need() -> None:
    from ticker_worker.db.migrate import MIGRATIONS

    lines = dockerfile()
    workdir = next(line.split()[1] for line in lines if line.startswith("WORKDIR "))
    copied: dict[str, str] = {}
    for line in lines:
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for source in sources:
                target = dest if not dest.endswith("/") else dest + Path(source).name
                copied[source] = str(Path(workdir) / target.removeprefix("./"))
    needed = ["pyproject.toml", "README.md", "ticker_worker", "celeryconfig.py", "migrations"]
    for path in needed:
        assert path in copied, f"the Dockerfile does not copy {path}"
        assert (ROOT / path).exists()
    # `db upgrade` looks for migrations beside the package's source tree, so the code must run
    # from the copied tree: it must sit next to the copied migrations and be first on the path.
    assert MIGRATIONS.parent == ROOT
    assert Path(copied["migrations"]).parent == Path(copied["ticker_worker"]).parent
    assert f"PYTHONPATH={Path(copied['ticker_worker']).parent}" in " ".join(lines)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and not set(needed) & set(ignored)
