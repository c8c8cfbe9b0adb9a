"""Target 4: the buffered Lambda handler (Mangum) invoked in-process with API Gateway REST events.

Run as its own process (``python -m bench.handler_path``) with the gateway's environment (moto,
routing and key parameters), exactly as Lambda would import ``functions/gateway/handler.py``.
It times ``import handler`` (Lambda's init), then ``--warmup`` + ``--requests`` invocations. Each
invocation's figure is the wall time inside ``handler(event, context)`` minus the time spent in
the upstream call, measured by a wrapper around the gateway's own HTTP transport (from the
request leaving to the last body byte arriving). Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_DIR = ROOT / "functions" / "gateway"


class _Context:
    """The slice of the Lambda context object that the app reads."""

    function_name = "switchboard-bench"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:switchboard-bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def rest_event(path: str, body: dict[str, Any], api_key: str) -> dict[str, Any]:
    """An API Gateway REST (v1, proxy integration) event, shaped like ``sam local generate-event``."""
    headers = {
        "Accept": "application/json",
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "switchboard-bench",
        "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": "POST",
            "path": "/prod" + path,
            "stage": "prod",
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "switchboard-bench"},
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


class UpstreamClock:
    """Wraps an httpx transport; ``total`` accumulates request-sent-to-last-byte seconds."""

    def __init__(self, inner: Any) -> None:
        import httpx

        self.inner = inner
        self.total = 0.0
        clock = self

        class Timed(httpx.AsyncByteStream):
            def __init__(self, stream: Any, started: float) -> None:
                self.stream, self.started = stream, started

            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for part in self.stream:
                    yield part
                clock.total += time.perf_counter() - self.started

            async def aclose(self) -> None:
                await self.stream.aclose()

        self._timed = Timed

    async def handle_async_request(self, request: Any) -> Any:
        started = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        response.stream = self._timed(response.stream, started)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def loaded_modules() -> list[str]:
    """Source paths, relative to their sys.path entry, of every module loaded so far, plus what the
    uvicorn entry (the streaming mode) loads: the layer's files that were never needed."""
    for name in (
        "uvicorn.main",
        "uvicorn.loops.uvloop",
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.lifespan.on",
    ):
        __import__(name)
    roots = sorted((p for p in sys.path if p), key=len, reverse=True)
    out = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        for root in roots:
            if path.startswith(root.rstrip("/") + "/"):
                out.append(path[len(root.rstrip("/")) + 1 :])
                break
    return sorted(set(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handler_path")
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(FUNCTION_DIR))
    t0 = time.perf_counter()
    import handler as lambda_handler  # Lambda's init phase: import + wiring

    import_s = time.perf_counter() - t0
    gateway = lambda_handler.handler.app.state.gateway
    clock = UpstreamClock(gateway.engine.http._transport)
    gateway.engine.http._transport = clock

    body = {"model": args.model, "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}
    context = _Context()
    overhead: list[float] = []
    inside: list[float] = []
    upstream: list[float] = []
    statuses: dict[int, int] = {}
    first_s = None
    deadline = time.perf_counter() + args.duration
    for i in range(args.warmup + args.requests):
        if overhead and time.perf_counter() > deadline:  # at least one timed request, however slow
            break
        event = rest_event("/v1/chat/completions", body, args.api_key)
        before = clock.total
        t = time.perf_counter()
        out = lambda_handler.handler(event, context)
        wall = time.perf_counter() - t
        if first_s is None:
            first_s = wall
        statuses[out["statusCode"]] = statuses.get(out["statusCode"], 0) + 1
        if i >= args.warmup and out["statusCode"] == 200:
            up = clock.total - before
            inside.append(wall * 1000)
            upstream.append(up * 1000)
            overhead.append((wall - up) * 1000)
    json.dump(
        {
            "modules": loaded_modules(),
            "import_s": import_s,
            "first_invoke_s": first_s,
            "overhead_ms": overhead,
            "inside_ms": inside,
            "upstream_ms": upstream,
            "statuses": {str(k): v for k, v in statuses.items()},
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
