"""``switchboard``: run the local stack and manage the routing document.

    switchboard dev                       moto + mock provider + gateway on 127.0.0.1
    switchboard routing validate FILE     check a document without pushing it
    switchboard routing push FILE [--yes] validate, diff against the live one, put the parameter
    switchboard routing show              print the live document
    switchboard routing schema            print the JSON Schema of the document
    switchboard spend [--by key|team|model|provider] [--period 2026-11] [--json] [--dev]
    switchboard keys ... / budgets ...    virtual keys, limits, the sweeper (commands/limits.py)

AWS calls go to the account in the environment, or to moto when ``AWS_ENDPOINT_URL`` points there.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
from pathlib import Path

from switchboard.commands import limits as limits_commands
from switchboard.commands import spend
from switchboard.settings import Settings

__all__ = ["main"]


def _fail(message: str, code: int = 1) -> int:
    print(f"switchboard: {message}", file=sys.stderr)
    return code


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")


def _ssm(settings: Settings):  # type: ignore[no-untyped-def]
    from switchboard import aws

    return aws.client("ssm", settings.region)


def _validate(text: str) -> str:
    from switchboard.routing.document import load_document

    doc, revision = load_document(text)
    return f"valid: schema version {doc.version}, revision {revision}, {len(doc.providers)} providers, " + (
        f"{len(doc.models)} models ({', '.join(sorted(doc.models))})"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        print(_validate(_read(args.file)))
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def _live(settings: Settings, name: str) -> str | None:
    try:
        return str(_ssm(settings).get_parameter(Name=name)["Parameter"]["Value"])
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
        text = _read(args.file)
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
    compact = json.dumps(json.loads(text), separators=(",", ":"))
    tier = "Advanced" if len(compact.encode()) > 4096 else "Standard"
    _ssm(settings).put_parameter(Name=name, Value=compact, Type="String", Overwrite=True, Tier=tier)
    print(f"pushed to {name} ({len(compact)} bytes, {tier} tier); in force within the cache age")
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


def cmd_dev(args: argparse.Namespace) -> int:
    import uvicorn

    from switchboard.devtools.devstack import DevStack
    from switchboard.logs import configure_logging

    configure_logging()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    env = os.environ
    stack = DevStack(
        moto_port=int(env.get("MOTO_PORT", "5055")),
        mock_port=int(env.get("MOCK_PORT", "9100")),
        api_key=env.get("SWITCHBOARD_DEV_KEY", "sk-switchboard-dev"),
    )
    if env.get("ROUTING_FILE"):
        stack.routing_file = Path(env["ROUTING_FILE"])
    port = int(env.get("PORT", "8080"))
    try:
        stack.start()
    except OSError as exc:
        return _fail(f"could not start the local stack: {exc} (is a port in use? set MOTO_PORT/MOCK_PORT)")
    except ValueError as exc:
        return _fail(str(exc))
    base = f"http://127.0.0.1:{port}/v1"
    print(
        f"""
Switchboard dev stack
  gateway   {base}
  api key   {stack.api_key}
  moto      {stack.env["AWS_ENDPOINT_URL"]}   mock provider {stack.mock.base_url}

  curl {base}/chat/completions -H 'Authorization: Bearer {stack.api_key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hello"}}], "stream": true}}'

  python -c "from openai import OpenAI; c = OpenAI(base_url='{base}', api_key='{stack.api_key}'); \\
print(c.chat.completions.create(model='demo-fallback', messages=[{{'role': 'user', 'content': 'hi'}}]))"

Models: gpt-4o-mini, mock-echo, demo-fallback, demo-slow-stream, demo-weighted; embeddings:
text-embedding-3-small. /v1/messages serves the Anthropic SDK too. Ctrl-C stops everything.
Spend so far (another shell): switchboard spend --dev [--by model]
""",
        flush=True,
    )
    try:
        uvicorn.run(
            "switchboard.api:create_app", factory=True, host="127.0.0.1", port=port, log_level="warning"
        )
    finally:
        stack.stop()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the gateway locally on moto and the mock provider").set_defaults(
        func=cmd_dev
    )
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
        "--param", help="parameter name (default: SWITCHBOARD_ROUTING_PARAM or /switchboard/routing)"
    )
    push.set_defaults(func=cmd_push)
    show = routing.add_parser("show", help="print the live document")
    show.add_argument("--param")
    show.set_defaults(func=cmd_show)
    routing.add_parser("schema", help="print the JSON Schema").set_defaults(func=cmd_schema)
    spend.add_parser(commands)
    limits_commands.register(commands)  # keys ..., budgets ...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI reports, it does not dump a traceback with request details
        return _fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
