"""Command-line entry point ``ctiengine``.

Subcommands: ``run CONFIG`` (start the engine), ``check CONFIG`` (validate,
exit 2 on errors), ``ctl OP key=value ...`` (one control-socket request,
JSON out), ``passwd`` (print a scrypt hash for a config file), ``version``;
``backup``, ``restore``, ``audit`` (the store's tools, :mod:`engine.store_cli`).
Later issues add ``bench``, ``report`` through
:data:`SUBCOMMANDS` (name → (configure parser, run)).

Exit status: 0 success, 1 runtime failure (cannot bind, ``ctl`` error
reply), 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from typing import Any, Callable

from engine import __version__
from engine.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

ENV_HOST = "CTIENGINE_HOST"
ENV_PORT = "CTIENGINE_PORT"
ENV_UNIX = "CTIENGINE_UNIX"
ENV_USER = "CTIENGINE_USER"
ENV_PASSWORD = "CTIENGINE_PASSWORD"

# The demo's local-only credentials (examples/demo.toml, docs/config.md), used
# by `ctl` when neither options nor environment name a user.
DEMO_USER = "admin"
DEMO_PASSWORD = "demo-admin"


def _cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from engine.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"{args.config}: {len(exc.errors)} error(s)", file=sys.stderr)
        return EXIT_USAGE
    # The flows a config names are part of it: validate them the same way
    # (file:line: reason, all at once) so `check` fails before `run` would.
    from ivr.cli import check as check_flows, print_problems

    flow_paths = [cfg.resolve_path(f.path) for f in cfg.flows.values()]
    errors, warnings = check_flows(flow_paths) if flow_paths else ([], [])
    print_problems(errors, warnings)
    if errors:
        print(f"{args.config}: {len(errors)} error(s) in IVR flows", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.config}: OK: {cfg.summary()}")
    return EXIT_OK


def _cmd_ivr(args: argparse.Namespace) -> int:
    from ivr.cli import run as run_ivr

    return run_ivr(args)


def _cmd_passwd(args: argparse.Namespace) -> int:
    from engine.passwords import DEFAULT_N, hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return EXIT_USAGE
    if not password:
        print("empty password refused", file=sys.stderr)
        return EXIT_USAGE
    print(hash_password(password, n=args.n or DEFAULT_N))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from engine.app import run_engine
    from engine.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    return run_engine(cfg, log_level=args.log_level)


def parse_value(text: str) -> Any:
    """A ``key=value`` value: JSON when it parses (``5``, ``true``, ``["a"]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cmd_ctl(args: argparse.Namespace) -> int:
    from engine.client import ControlClient, ClientError

    op_args: dict[str, Any] = {}
    for item in args.args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"argument {item!r} is not key=value", file=sys.stderr)
            return EXIT_USAGE
        op_args[key] = parse_value(value)
    unix = args.unix or os.environ.get(ENV_UNIX) or None
    host = args.host or os.environ.get(ENV_HOST) or "127.0.0.1"
    port = args.port or int(os.environ.get(ENV_PORT) or 7070)
    user = args.user or os.environ.get(ENV_USER) or DEMO_USER
    password = args.password if args.password is not None else os.environ.get(ENV_PASSWORD)
    if password is None:
        password = DEMO_PASSWORD if user == DEMO_USER else ""

    async def go() -> int:
        client = ControlClient(host=host, port=port, unix_path=unix, user=user, password=password,
                               reconnect=False)
        try:
            await asyncio.wait_for(client.connect(), args.timeout)
            if args.op == "events.subscribe":
                await client.subscribe(**op_args)
                count = 0
                async for event in client.events():
                    print(json.dumps(event, default=str), flush=True)
                    count += 1
                    if args.count and count >= args.count:
                        break
                return EXIT_OK
            result = await asyncio.wait_for(client.request(args.op, **op_args), args.timeout)
            print(json.dumps(result, indent=2, sort_keys=True, default=str))
            return EXIT_OK
        except ClientError as exc:
            print(json.dumps({"ok": False, "error": {"code": exc.code, "message": exc.message}}),
                  file=sys.stderr)
            return EXIT_FAILURE
        except (OSError, asyncio.TimeoutError) as exc:
            where = unix or f"{host}:{port}"
            print(f"cannot reach the engine at {where}: {exc or 'timed out'}", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            await client.close()

    return asyncio.run(go())


def _configure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)

    p = sub.add_parser("check", help="validate a configuration file (exit 2 on errors)")
    p.add_argument("config")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("passwd", help="print a scrypt hash of a password for the config file")
    p.add_argument("--stdin", action="store_true", help="read the password from one line of stdin")
    p.add_argument("-n", type=int, default=0, help="scrypt cost (power of two, default 16384)")
    p.set_defaults(func=_cmd_passwd)

    p = sub.add_parser("run", help="start the engine")
    p.add_argument("config")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                   help="overrides engine.log_level")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("ctl", help="send one control-socket request and print the JSON result")
    p.add_argument("--host", help=f"engine host (env {ENV_HOST}, default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"engine TCP port (env {ENV_PORT}, default 7070)")
    p.add_argument("--unix", help=f"Unix socket path instead of TCP (env {ENV_UNIX})")
    p.add_argument("--user", help=f"control user (env {ENV_USER}, default the demo's 'admin')")
    p.add_argument("--password", help=f"password (env {ENV_PASSWORD})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--count", type=int, default=0,
                   help="events.subscribe: exit after this many events (default: run until ^C)")
    p.add_argument("op", help="operation name, e.g. engine.status")
    p.add_argument("args", nargs="*", help="key=value arguments (values parsed as JSON when possible)")
    p.set_defaults(func=_cmd_ctl)

    from ivr.cli import add_arguments as add_ivr_arguments

    p = sub.add_parser("ivr", help="IVR flow tools: draw a flow as a graph, check flows")
    add_ivr_arguments(p)
    p.set_defaults(func=_cmd_ivr)


def _configure_store_tools(sub: argparse._SubParsersAction) -> None:
    from engine.store_cli import configure

    configure(sub)


def _configure_demo(sub: argparse._SubParsersAction) -> None:
    from engine.demo import configure

    configure(sub)


def _configure_report(sub: argparse._SubParsersAction) -> None:
    from engine.report_cli import configure

    configure(sub)


# Later issues register more subcommands here: name -> configure(subparsers).
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_configure, _configure_store_tools,
                                                                   _configure_demo, _configure_report]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctiengine", description="ctiengine call-centre engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for configure in SUBCOMMANDS:
        configure(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    logging.basicConfig()
    sys.exit(main())
