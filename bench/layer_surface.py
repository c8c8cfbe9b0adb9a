"""Which files of a built layer the gateway really loads: the evidence for layers/Makefile's pruning.

    python -m bench.layer_surface --layer /tmp/l86/python [--tracing-layer /tmp/t86/python]
                                  [--out loaded.txt] [--unused] [--unused-files]

Builds a stand-in Lambda runtime (boto3, botocore and their dependencies copied from this venv,
as the python3.13 runtime provides them), starts moto (patched, as `make dev` does) and the mock
upstream from this venv, then runs the gateway in isolated interpreters (`-I -S`, sys.path = the
function directory, the layer, the tracing layer when given, the stand-in runtime; nothing from
this venv) and exercises:

  handler   functions/gateway/handler.py through Mangum: models, buffered chat with a key without
            limits and with a budget + rpm/tpm key, a stream request, 401/404/400 errors; every
            provider module; functions/sweeper/handler.py invoked; switchboard.infra.tracing with
            SWITCHBOARD_TRACING=on (the X-Ray SDK path: on with --tracing-layer, and without it
            the gateway must log the missing SDK and serve on)
  uvicorn   `python -m uvicorn app:app --loop uvloop --http httptools` as run.sh starts it, served
            buffered and streamed chat completions over HTTP, then stopped with SIGTERM

Every response must have its expected status (exit 1 otherwise, as for an ImportError). Each child
writes the files of every module in sys.modules at exit. The union is printed with, on request,
the layer's subpackages of which no module was loaded (--unused), or every never-loaded module
file by size with the layer modules whose bytecode names it (--unused-files; bench.layer_imports).

Build the layers for this machine with the Lambda recipe (x86_64 wheels, same pins and pruning):
    make -f layers/Makefile build-GatewayLayer build-TracingLayer LAYER_ARCH=x86_64 \
        ARTIFACTS_DIR=/tmp/l86   (then --layer /tmp/l86/python; TracingLayer: another ARTIFACTS_DIR)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
DEV_KEY = "sk-switchboard-dev"
LIMITS_KEY = "sk-surface-limits-key"

CHILD = r"""
import atexit, base64, json, os, sys, time, uuid
out = os.environ["SURFACE_OUT"]

def dump():
    files = sorted({str(getattr(m, "__file__", None)) for m in list(sys.modules.values())
                    if getattr(m, "__file__", None)})
    with open(out, "w") as f:
        f.write("\n".join(files))
atexit.register(dump)

def event(method, path, body=None, key=DEV_KEY):
    headers = {"Host": "x.execute-api.us-east-1.amazonaws.com", "Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    return {"body": body, "resource": "/{proxy+}", "path": path, "httpMethod": method,
            "isBase64Encoded": False, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": {"proxy": path.lstrip("/")},
            "stageVariables": None, "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "requestContext": {"accountId": "1", "resourceId": "1", "stage": "Prod",
                               "requestId": str(uuid.uuid4()), "requestTimeEpoch": int(time.time() * 1000),
                               "identity": {"sourceIp": "203.0.113.7", "userAgent": "surface"},
                               "path": "/Prod" + path, "resourcePath": "/{proxy+}", "httpMethod": method,
                               "apiId": "x", "protocol": "HTTP/1.1"}}

class Context:
    function_name = "surface"; memory_limit_in_mb = 512; aws_request_id = "r"
    invoked_function_arn = "arn:aws:lambda:us-east-1:1:function:surface"
    def get_remaining_time_in_millis(self):
        return 29000

if sys.argv[1] == "handler":
    import importlib, pkgutil
    import handler
    msgs = [{"role": "user", "content": "hi"}]
    chat = lambda **kw: json.dumps({"model": "mock-echo", "messages": msgs, **kw})
    calls = [
        (200, event("GET", "/v1/models")),
        (200, event("POST", "/v1/chat/completions", chat())),
        (200, event("POST", "/v1/chat/completions", chat(max_tokens=16), key=LIMITS_KEY)),
        (200, event("POST", "/v1/chat/completions", chat(stream=True))),
        (200, event("POST", "/v1/chat/completions", chat(stream=True), key=LIMITS_KEY)),
        (401, event("POST", "/v1/chat/completions", chat(), key="sk-wrong")),
        (404, event("POST", "/v1/chat/completions", chat(model="no-such-model"))),
        (400, event("POST", "/v1/chat/completions", "{not json")),
    ]
    failed = []
    for expected, e in calls:
        r = handler.handler(e, Context())
        print(e["httpMethod"], e["path"], r["statusCode"], file=sys.stderr)
        if r["statusCode"] != expected:
            failed.append(f"{e['path']}: {r['statusCode']}, expected {expected}: {r['body'][:300]}")
    import switchboard.upstream.providers as providers
    for info in pkgutil.iter_modules(providers.__path__):
        importlib.import_module("switchboard.upstream.providers." + info.name)
    os.environ["SWITCHBOARD_TRACING"] = "on"
    import switchboard.infra.tracing as tracing
    on = tracing.configure("on")
    print("tracing", "on" if on else "unavailable", file=sys.stderr)
    if on != (os.environ["SURFACE_TRACING"] == "1"):
        failed.append(f"tracing.configure('on') returned {on}")
    sys.path.insert(0, os.environ["SURFACE_SWEEPER"])
    sys.modules.pop("handler")
    import handler as sweeper
    print("sweeper", sweeper.handler({}, Context()), file=sys.stderr)
    if failed:
        sys.exit("surface: " + "; ".join(failed))
"""


def runtime_dir(dest: Path) -> Path:
    """boto3 and what it needs, copied from this venv: the stand-in for the runtime's own copy."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for name in RUNTIME_PACKAGES:
        src = site / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def child_env(base: dict[str, str], out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(base)
    env["SURFACE_OUT"] = str(out)
    env["SURFACE_SWEEPER"] = str(ROOT / "functions" / "sweeper")
    return env


def python313() -> str:
    """The base interpreter under this venv (3.13, as the runtime), not the venv's own."""
    return os.environ.get("PY313") or str(Path(sys.base_prefix) / "bin" / "python3.13")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.layer_surface", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--layer", type=Path, required=True, help="a built layer's python/ directory")
    parser.add_argument("--out", type=Path, help="write the loaded layer files here, one a line")
    parser.add_argument("--unused", action="store_true", help="list never-loaded subpackages by size")
    parser.add_argument(
        "--unused-files",
        action="store_true",
        help="list never-loaded module files by size, with the modules that import them",
    )
    parser.add_argument(
        "--tracing-layer",
        type=Path,
        help="the TracingLayer's python/ directory (X-Ray SDK); without it, tracing must degrade",
    )
    args = parser.parse_args(argv)
    layers = [args.layer.resolve(), *([args.tracing_layer.resolve()] if args.tracing_layer else [])]

    from decimal import Decimal

    import boto3
    from switchboard.core.principal import Limits, Period
    from switchboard.core.settings import Settings
    from switchboard.devtools.devstack import DevStack
    from switchboard.limits.keys import KeyStore
    from switchboard.limits.table import Table

    work = Path(tempfile.mkdtemp(prefix="layer-surface-"))
    stack = DevStack(moto_port=0, mock_port=0).start()
    try:
        aws = stack.env
        settings = Settings.from_env({})
        limits = Limits(budget_usd=Decimal(1000), period=Period.MONTH, rpm=100000, tpm=10**9)
        KeyStore(Table(boto3.client("dynamodb", region_name=settings.region), settings.table)).create(
            "surface", limits=limits, secret=LIMITS_KEY
        )
        runtime = runtime_dir(work / "runtime")
        # On Lambda every layer unpacks into /opt; no top-level package is split between the two.
        path = os.pathsep.join([str(ROOT / "functions" / "gateway"), *map(str, layers), str(runtime)])
        base = {**aws, "PYTHONPATH": path, "POWERTOOLS_METRICS_NAMESPACE": "Surface"}
        base["SURFACE_TRACING"] = "1" if args.tracing_layer else "0"
        py = python313()
        loaded: set[str] = set()

        # handler: -I ignores PYTHONPATH, so the child gets sys.path from -c
        prelude = f"import sys; sys.path[:0] = {path.split(os.pathsep)!r}; DEV_KEY={DEV_KEY!r}; "
        prelude += f"LIMITS_KEY={LIMITS_KEY!r}\n"
        out = work / "handler.txt"
        done = subprocess.run(
            [py, "-I", "-S", "-c", prelude + CHILD, "handler"],
            env=child_env(base, out),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
        print(done.stderr[-3000:], file=sys.stderr)
        if done.returncode != 0:
            print(f"handler run failed (exit {done.returncode})", file=sys.stderr)
            return 1
        loaded |= set(out.read_text().splitlines())

        # uvicorn: the Web Adapter's command line
        out = work / "uvicorn.txt"
        dumper = (
            prelude + "import atexit, os, sys\n"
            "def dump():\n"
            "    mods = list(sys.modules.values())\n"
            "    files = sorted({str(m.__file__) for m in mods if getattr(m, '__file__', None)})\n"
            "    open(os.environ['SURFACE_OUT'], 'w').write('\\n'.join(files))\n"
            "atexit.register(dump)\n"
            "import signal; signal.raise_signal = lambda s: None  # uvicorn re-raises SIGTERM: exit cleanly\n"
            "import runpy; runpy.run_module('uvicorn', run_name='__main__', alter_sys=True)\n"  # -m uvicorn
        )
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [
                py,
                "-I",
                "-S",
                "-c",
                dumper,
                "--host",
                "127.0.0.1",
                f"--port={port}",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--no-server-header",
                "app:app",
            ],
            env=child_env(base, out),
            cwd=ROOT / "functions" / "gateway",
        )
        failed: list[str] = []
        try:
            import http.client

            deadline = time.time() + 60
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/v1/models", headers={"authorization": f"Bearer {DEV_KEY}"})
                    conn.getresponse().read()
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.1)
            for key in (DEV_KEY, LIMITS_KEY):
                for stream in (False, True):
                    msgs = [{"role": "user", "content": "hi"}]
                    body = {"model": "mock-echo", "messages": msgs, "stream": stream}
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request(
                        "POST", "/v1/chat/completions", json.dumps(body),
                        {"authorization": f"Bearer {key}", "content-type": "application/json"},
                    )  # fmt: skip
                    r = conn.getresponse()
                    text = r.read()
                    print("uvicorn", key[:8], stream, r.status, file=sys.stderr)
                    if r.status != 200 or (stream and b"data: [DONE]" not in text):
                        failed.append(f"uvicorn {key[:8]} stream={stream}: {r.status} {text[:300]!r}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        loaded |= set(out.read_text().splitlines())
        if failed:
            print("uvicorn run failed: " + "; ".join(failed), file=sys.stderr)
            return 1
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)

    for layer in layers:
        rel = sorted(os.path.relpath(p, layer) for p in loaded if p.startswith(str(layer) + os.sep))
        print(f"{layer}: {len(rel)} layer files loaded", file=sys.stderr)
        if args.out and layer == layers[0]:
            args.out.write_text("\n".join(rel) + "\n")
        if args.unused:
            report_unused(layer, set(rel))
        if args.unused_files:
            report_unused_files(layer, set(rel))
    return 0


def report_unused(layer: Path, loaded: set[str]) -> None:
    """Package directories (with __init__) in which no module was loaded, outermost first."""
    loaded_dirs = {str(Path(p).parent) for p in loaded}
    rows = []
    inits = [*layer.rglob("__init__.py"), *layer.rglob("__init__.pyc")]
    for init in sorted(i for i in inits if i.parent.name != "__pycache__"):
        d = init.parent
        rel = os.path.relpath(d, layer)
        if any(ld == rel or ld.startswith(rel + os.sep) for ld in loaded_dirs):
            continue
        if any(rel.startswith(r + os.sep) for r, _ in rows):
            continue
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        rows.append((rel, size))
    for rel, size in sorted(rows, key=lambda r: -r[1]):
        print(f"{size / 1024:8.0f} KB  {rel}")
    print(f"{sum(s for _, s in rows) / 1024 / 1024:.2f} MB in never-loaded packages")


def report_unused_files(layer: Path, loaded: set[str]) -> None:
    """Never-loaded module files by size, each with the layer modules whose bytecode names it.

    An importer marked * was loaded in the run: the import that names the file sits on a path that
    did not run (a TYPE_CHECKING block, an ImportError fallback, a function not called), which the
    reader must account for before the file can go. No importer, or only unmarked ones that are
    themselves dead, is the static half of the evidence; the run is the other half.
    """
    from bench.layer_imports import module_name, static_importers

    importers = static_importers(layer)
    loaded_modules = {m for p in loaded if (m := module_name(p))}
    rows = []
    for f in layer.rglob("*"):
        rel = f.relative_to(layer).as_posix()
        module = module_name(rel) if f.is_file() else None
        if module and rel not in loaded:
            rows.append((f.stat().st_size, rel, module))
    for size, rel, module in sorted(rows, reverse=True):
        names = sorted(importers.get(module, ()), key=lambda m: (m not in loaded_modules, m))
        by = ", ".join(("*" if m in loaded_modules else "") + m for m in names) or "-"
        print(f"{size / 1024:8.1f} KB  {rel}  <- {by}")
    print(f"{sum(r[0] for r in rows)} bytes in {len(rows)} never-loaded module files of {layer}")


if __name__ == "__main__":
    sys.exit(main())
