"""`ticker-worker up`: the whole local stack in one supervised command (DESIGN 2 and 4.4): its
options, and the run of the stages (`cli/up_stages.py`) with a stop that leaves nothing behind.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ticker_worker.cli.common import cli_runtime
from ticker_worker.cli.up_stages import Ports, Stack
from ticker_worker.config import STATE_DIR
from ticker_worker.supervise import ChildExited, Interrupted, NotReady, Supervisor

PORT = click.IntRange(1, 65535)


@click.command()
@click.option("--sim/--no-sim", "use_sim", default=None,
              help="Force the simulator on or off. Default: the simulator unless KITE_WS_ROOT is "
                   "Kite's real endpoint and a real (non-demo) account exists.")
@click.option("--port-base", type=PORT, help="Simulator on BASE, holder BASE+1, Flower BASE+2.")
@click.option("--sim-port", type=PORT, help="Simulator port.  [default: 8765]")
@click.option("--holder-port", type=PORT, help="Holder /health and /metrics port.  "
                                               "[default: HOLDER_HTTP_PORT or 8080]")
@click.option("--flower-port", type=PORT, help="Flower port.  [default: FLOWER_PORT or 5555]")
@click.option("--tick-interval", type=click.FloatRange(min=0.001),
              help="Seconds between the simulator's ticks per instrument.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(STATE_DIR), show_default=True,
              help="Where generated Flower credentials and the embedded servers' data are kept.")
@click.option("--embedded", is_flag=True,
              help="Run embedded Postgres and Redis even if others are configured or running.")
@click.option("--postgres-port", type=PORT,
              help="Port of a new embedded Postgres.  [default: a free one]")
@click.option("--redis-port", type=PORT, help="Port of a new embedded Redis.  [default: free]")
@click.pass_context
def up(ctx: click.Context, use_sim: bool | None, port_base: int | None, sim_port: int | None,
       holder_port: int | None, flower_port: int | None, tick_interval: float | None,
       state_dir: Path, embedded: bool, postgres_port: int | None,
       redis_port: int | None) -> None:
    """Run the whole stack, supervised: Postgres and Redis when none is configured or running
    (embedded), simulator, migrations, holder, workers, Flower.

    Ctrl-C (or SIGTERM) stops everything. A child that dies stops the rest and exits 1.
    """
    settings = cli_runtime().settings
    ports = Ports.choose(settings, port_base, sim_port, holder_port, flower_port)
    sup = Supervisor(width=8)
    stack = Stack(sup, settings, ports, state_dir, tick_interval)
    code = 1
    try:
        code = _run(ctx, stack, use_sim, (embedded, postgres_port, redis_port))
    finally:
        if sup.children:
            sup.say("stopping everything")
            killed = sup.stop_all()
            sup.say(f"stopped{' (had to SIGKILL ' + ', '.join(killed) + ')' if killed else ''}")
    sys.exit(code)


def _run(ctx: click.Context, stack: Stack, use_sim: bool | None,
         servers: tuple[bool, int | None, int | None]) -> int:
    sup, started = stack.sup, time.monotonic()
    try:
        stack.servers(*servers)
        stack.migrate()
        stack.choose_kite(use_sim)
        stack.check_ports()
        stack.point_children()
        stack.start_sim()
        stack.ensure_accounts()
        stack.sync_instruments(ctx)
        stack.start_holder()
        stack.start_workers()
        stack.start_flower()
        stack.announce(started)
        crashed = sup.watch()
    except Interrupted:
        return 0
    except ChildExited as exc:
        crashed = exc.child
    except NotReady as exc:
        last = sup.children[-1]
        sup.report(last, f"{exc}; stopping. The last lines of {last.name}:")
        return 1
    if crashed is None:
        return 0
    sup.report_exit(crashed)
    return 1
