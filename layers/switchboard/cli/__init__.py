"""``switchboard``: run the local stack and manage the routing document.

    switchboard dev                       moto + mock provider + gateway on 127.0.0.1 (state kept)
    switchboard serve [--host H] [--port P]  the gateway alone, over the AWS in the environment
    switchboard routing validate FILE     check a document without pushing it
    switchboard routing push FILE [--yes] validate, diff against the live one, put the parameter
    switchboard routing show              print the live document (joined from its parts, if split)
    switchboard routing pull [FILE]       write the live document, compact, to FILE (or stdout)
    switchboard routing schema            print the JSON Schema of the document
    switchboard routing explain FILE --model X --prompt-tokens N [...]  a decision, offline
    switchboard spend [--by key|team|model|provider] [--period 2026-11] [--json] [--dev]
    switchboard keys ... / budgets ...    virtual keys, limits, the sweeper (cli/limits.py)

AWS calls go to the account in the environment, or to moto when ``AWS_ENDPOINT_URL`` points there.
Every subcommand takes ``--dev`` (or ``SWITCHBOARD_DEV=1``): the local stack of ``switchboard dev``,
with its endpoint, dummy credentials and region (``switchboard.cli.devenv``); or ``--stack NAME``
(or ``SWITCHBOARD_STACK``): a deployed stack, whose table and routing parameter are read from its
outputs (``switchboard.cli.stack``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from switchboard.cli import devenv, explain, spend, stack
from switchboard.cli import limits as limits_commands
from switchboard.core.settings import Settings

__all__ = ["main"]


def _fail(message: str, code: int = 1) -> int:
    print(f"switchboard: {message}", file=sys.stderr)
    return code


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")


def _ssm(settings: Settings):  # type: ignore[no-untyped-def]
    from switchboard.infra import aws

    return aws.client("ssm", settings.region)


PLACEHOLDER = "${MOCK_BASE_URL}"


def _fill_placeholder(text: str) -> str:
    """The dev routing file's ``${MOCK_BASE_URL}``, filled in as ``switchboard dev`` does (the
    mock provider on ``127.0.0.1:$MOCK_PORT``, or ``MOCK_BASE_URL`` when set), with a note."""
    if PLACEHOLDER not in text:
        return text
    url = os.environ.get("MOCK_BASE_URL") or f"http://127.0.0.1:{os.environ.get('MOCK_PORT') or 9100}/v1"
    print(
        f"note: {PLACEHOLDER} is the dev stack's mock provider; filled in as {url} "
        "(set MOCK_BASE_URL or MOCK_PORT to change it)",
        file=sys.stderr,
    )
    return text.replace(PLACEHOLDER, url)


def _validate(text: str) -> str:
    from switchboard.routing.document import load_document
    from switchboard.upstream.providers import REGISTRY

    doc, revision = load_document(text, REGISTRY)
    return f"valid: schema version {doc.version}, revision {revision}, {len(doc.providers)} providers, " + (
        f"{len(doc.models)} models ({', '.join(sorted(doc.models))})"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        print(_validate(_fill_placeholder(_read(args.file))))
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _live(settings: Settings, name: str) -> str | None:
    """The live document, joined from its parts when split (``switchboard.routing.parts``)."""
    from switchboard.routing import parts

    try:
        return parts.read(_ssm(settings), name)
    except Exception as exc:
        if type(exc).__name__ == "ParameterNotFound" or "ParameterNotFound" in str(exc):
            return None
        raise


def _pretty(text: str) -> list[str]:
    return json.dumps(json.loads(text), indent=2, sort_keys=True).splitlines(keepends=True)


def cmd_push(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    name = args.param or settings.routing_param
    try:
        text = _fill_placeholder(_read(args.file))
        summary = _validate(text)
    except (OSError, ValueError) as exc:
        return _fail(f"not pushed: {exc}")
    print(summary)
    live = _live(settings, name)
    if live is not None:
        try:
            before = _pretty(live)
        except ValueError:
            before = live.splitlines(keepends=True)
        diff = list(difflib.unified_diff(before, _pretty(text), f"{name} (live)", args.file))
        if not diff:
            print("no change: the live document is the same")
            return 0
        sys.stdout.writelines(diff)
        print()
    else:
        print(f"{name} does not exist yet; it will be created")
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail("refusing to push without --yes when not interactive", 2)
        if input(f"push to {name}? [y/N] ").strip().lower() not in {"y", "yes"}:
            return _fail("not pushed", 1)
    from switchboard.routing import parts

    compact = json.dumps(json.loads(text), separators=(",", ":"))
    try:
        pushed = parts.write(_ssm(settings), name, compact)
    except ValueError as exc:
        return _fail(f"not pushed: {exc}")
    form = f"{pushed.parts} parts under {name}/ and their manifest" if pushed.parts else "one parameter"
    print(
        f"pushed to {name} ({pushed.size} bytes, {form}, {pushed.tier} tier); "
        "in force everywhere within the bound of docs/routing.md"
    )
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    name = args.param or settings.routing_param
    live = _live(settings, name)
    if live is None:
        return _fail(f"{name} does not exist")
    if args.file in (None, "-"):
        print(live)
    else:
        Path(args.file).write_text(live + "\n", encoding="utf-8")
        print(f"{name}: {len(live.encode())} bytes written to {args.file}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    name = args.param or settings.routing_param
    live = _live(settings, name)
    if live is None:
        return _fail(f"{name} does not exist")
    try:
        print(json.dumps(json.loads(live), indent=2))
    except ValueError:
        print(live)
        return _fail("the live document is not valid JSON")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from switchboard.routing.document import RoutingDocument

    print(json.dumps(RoutingDocument.model_json_schema(), indent=2))
    return 0


# The Lambda's uvicorn options (functions/gateway/run.sh), for every process that serves here.
UVICORN_OPTIONS: dict[str, object] = {
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "server_header": False,
}


def _serve(app: str, host: str, port: int, on_ready: Callable[[], None] | None = None, **extra: Any) -> None:
    """uvicorn with the Lambda's options (and ``extra``); ``on_ready`` runs once the socket listens."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if on_ready is not None and not self.should_exit:
                on_ready()

    options = {**UVICORN_OPTIONS, **extra}
    config = uvicorn.Config(app, factory=True, host=host, port=port, **options)
    Server(config).run()


def _self_command() -> str:
    """How to run this CLI again from the current directory, as it was started (``make dev`` runs
    ``.venv/bin/switchboard``, which is not on the PATH)."""
    started = Path(sys.argv[0])
    on_path = shutil.which("switchboard")
    if on_path and started.exists() and Path(on_path).resolve() == started.resolve():
        return "switchboard"
    if started.name == "switchboard" and started.exists():
        try:
            return str(started.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(started.resolve())
    return f"{sys.executable} -m switchboard.cli"


def _python_command() -> str:
    try:
        return str(Path(sys.executable).relative_to(Path.cwd()))
    except ValueError:
        return sys.executable


def banner(base: str, api_key: str, moto: str, mock: str, restored: bool, state: Path | None) -> str:
    """What ``switchboard dev`` prints once it is up: every command in it runs as printed."""
    cli = _self_command()
    moto_port = moto.rsplit(":", 1)[-1]
    if moto_port != devenv.DEFAULT_MOTO_PORT:  # a new shell has no MOTO_PORT: say which
        cli = f"MOTO_PORT={moto_port} {cli}"
    python = _python_command()
    kept = "none kept" if state is None else f"{'restored from' if restored else 'new, kept in'} {state}"
    return f"""
Switchboard dev stack
  gateway   {base}
  api key   {api_key}
  console   {base.removesuffix("/v1")}/console
  moto      {moto}   mock provider {mock}
  state     {kept}

  curl {base}/chat/completions -H 'Authorization: Bearer {api_key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hello"}}], "stream": true}}'

  {python} -c "from openai import OpenAI; c = OpenAI(base_url='{base}', api_key='{api_key}'); \\
print(c.chat.completions.create(model='demo-fallback', messages=[{{'role': 'user', 'content': 'hi'}}]))"

Models: gpt-4o-mini, mock-echo, demo-fallback, demo-slow-stream, demo-weighted, demo-tools;
routing demos: demo-cheapest, demo-fastest, demo-nested, demo-ab, demo-latency, demo-hedge,
demo-breaker (POST /v1/route/explain says why). Embeddings: text-embedding-3-small.
The Anthropic SDK works too, on /v1/messages. Ctrl-C stops everything (and keeps the state;
make dev-reset starts clean). In another shell:
  {cli} spend --dev --by model
  {cli} keys list --dev
  {cli} routing show --dev
"""


def _port(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable) or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise ValueError(f"{variable}={raw} is not a port number: set {variable} to a free port")
    return value


def cmd_dev(args: argparse.Namespace) -> int:
    from switchboard.devtools.devstack import STATE_DIR, DevStack, busy_port
    from switchboard.infra.logs import configure_logging

    env = os.environ
    try:
        ports = {name: _port(env, name, default) for name, default in _DEV_PORTS.items()}
    except ValueError as exc:
        return _fail(str(exc), 2)
    busy = busy_port(ports)
    if busy:
        return _fail(busy, 2)
    configure_logging()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    state_dir = Path(env.get("SWITCHBOARD_DEV_STATE") or STATE_DIR)
    stack = DevStack(
        moto_port=ports["MOTO_PORT"],
        mock_port=ports["MOCK_PORT"],
        api_key=env.get("SWITCHBOARD_DEV_KEY", "sk-switchboard-dev"),
        state_file=None if env.get("SWITCHBOARD_DEV_STATE") == "off" else state_dir / "moto.json",
    )
    if env.get("ROUTING_FILE"):
        stack.routing_file = Path(env["ROUTING_FILE"])
        stack.routing_wins = True
    try:
        stack.start()
    except OSError as exc:
        return _fail(f"could not start the local stack: {exc}")
    except ValueError as exc:
        return _fail(str(exc))
    port = ports["PORT"]
    base = f"http://127.0.0.1:{port}/v1"
    text = banner(
        base,
        stack.api_key,
        stack.env["AWS_ENDPOINT_URL"],
        stack.mock.base_url,
        stack.restored,
        stack.state_file,
    )
    try:  # the banner once the gateway listens: its commands work as soon as they can be pasted
        app = "switchboard.devtools.console:create_dev_app"  # the gateway and the console
        _serve(app, "127.0.0.1", port, lambda: print(text, flush=True), log_level="warning")
    finally:
        saved = stack.save()
        if saved is not None:
            print(f"state saved to {stack.state_file} ({saved} items)", flush=True)
        stack.stop()
    return 0


_DEV_PORTS = {"PORT": 8080, "MOTO_PORT": 5055, "MOCK_PORT": 9100}


def cmd_serve(args: argparse.Namespace) -> int:
    from switchboard.devtools.devstack import busy_port
    from switchboard.infra.logs import configure_logging

    try:
        port = args.port if args.port is not None else _port(os.environ, "PORT", 8080)
    except ValueError as exc:
        return _fail(str(exc), 2)
    busy = busy_port({"PORT": port}, args.host)
    if busy:
        return _fail(busy.replace("PORT to", "PORT (or --port) to"), 2)
    configure_logging()
    _serve("switchboard.http.app:create_app", args.host, port)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from switchboard.core.errors import GatewayError

    try:
        print(explain.dumps(explain.run(args, lambda path: _fill_placeholder(_read(path)))))
    except GatewayError as exc:  # an unknown alias, or no target left: what a call would answer
        return _fail(exc.message)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the gateway locally on moto and the mock provider").set_defaults(
        func=cmd_dev
    )
    serve = commands.add_parser("serve", help="the gateway alone, over the AWS in the environment")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT, else 8080)")
    serve.set_defaults(func=cmd_serve)
    routing = commands.add_parser("routing", help="the routing document").add_subparsers(
        dest="routing_command", required=True
    )
    validate = routing.add_parser("validate", help="check a document")
    validate.add_argument("file", help="path, or - for stdin")
    validate.set_defaults(func=cmd_validate)
    push = routing.add_parser("push", help="validate, diff and put the parameter")
    push.add_argument("file", help="path, or - for stdin")
    push.add_argument("--yes", action="store_true", help="do not ask before putting")
    push.add_argument(
        "--param",
        help="parameter name (default: the --stack's, else SWITCHBOARD_ROUTING_PARAM, /switchboard/routing)",
    )
    push.set_defaults(func=cmd_push)
    show = routing.add_parser("show", help="print the live document")
    show.add_argument("--param")
    show.set_defaults(func=cmd_show)
    pull = routing.add_parser("pull", help="write the live document to a file (joined, if split)")
    pull.add_argument("file", nargs="?", help="path, or - for stdout (the default)")
    pull.add_argument("--param")
    pull.set_defaults(func=cmd_pull)
    routing.add_parser("schema", help="print the JSON Schema").set_defaults(func=cmd_schema)
    explain.add_parser(routing, cmd_explain)
    spend.add_parser(commands)
    limits_commands.register(commands)  # keys ..., budgets ...
    _add_dev_flag(parser)
    return parser


def _add_dev_flag(parser: argparse.ArgumentParser) -> None:
    """``--dev`` on every command and subcommand, so it can be written anywhere."""
    if "--dev" not in parser._option_string_actions:
        parser.add_argument(
            "--dev",
            action="store_true",
            default=argparse.SUPPRESS,
            help="the local stack of 'switchboard dev' (or SWITCHBOARD_DEV=1)",
        )
    if "--stack" not in parser._option_string_actions:
        parser.add_argument(
            "--stack",
            default=argparse.SUPPRESS,
            help="a deployed stack: its table and routing parameter from its outputs (or SWITCHBOARD_STACK)",
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_dev_flag(child)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.func is not cmd_dev:  # dev starts its own moto and points itself at it
        dev = devenv.dev_requested(getattr(args, "dev", False), os.environ)
        devenv.apply(dev)
        deployed = None if dev else stack.requested(getattr(args, "stack", None), os.environ)
        if deployed:
            try:
                stack.apply(deployed, Settings.from_env().region)
            except Exception as exc:
                return _fail(f"stack {deployed}: {type(exc).__name__}: {exc}")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI reports, it does not dump a traceback with request details
        return _fail(f"{type(exc).__name__}: {exc}")
