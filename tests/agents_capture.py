"""A capture server for recording what agents send to ``POST /v1/responses``.

It keeps each request as it arrived (method, path, query, headers with every credential value
replaced by ``<redacted>``, and the exact body bytes) and answers a minimal valid Responses reply so
the client completes its turn: a JSON ``response`` object, or, for ``"stream": true``, OpenAI's
event sequence (``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, ``response.completed``).

With ``--call-tool NAME``, a request that offers the function tool ``NAME`` and carries no
``function_call_output`` yet is answered with a call of that tool (arguments ``--arguments``), so a
tool-using agent runs its tool and sends a second request with the call's output.

    python -m tests.agents_capture --port 9300 --out /tmp/capture [--call-tool get_weather]

Each request is written to ``OUT/NNN.json`` (metadata, the body parsed when it is JSON) and
``OUT/NNN.body`` (the bytes). Any path other than ``/v1/responses`` (or ``/responses``) is recorded
and answered 404. Loopback only. Starlette and uvicorn, nothing else.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["CaptureServer", "completed_response", "response_events"]

_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "openai-api-key", "cookie"})
REPLY_TEXT = "Done: captured."


def _usage() -> dict[str, Any]:
    return {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 13,
    }


def _output(tool: str | None, arguments: str, n: int) -> dict[str, Any]:
    if tool is not None:
        return {
            "type": "function_call",
            "id": f"fc_capture{n}",
            "call_id": f"call_capture{n}",
            "name": tool,
            "arguments": arguments,
            "status": "completed",
        }
    text = {"type": "output_text", "text": REPLY_TEXT, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": f"msg_capture{n}",
        "status": "completed",
        "role": "assistant",
        "content": [text],
    }


def completed_response(
    body: dict[str, Any], n: int, tool: str | None = None, arguments: str = "{}"
) -> dict[str, Any]:
    """A whole ``response`` object that answers ``body`` (text, or a call of ``tool``)."""
    return {
        "id": f"resp_capture{n}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model", "capture"),
        "output": [_output(tool, arguments, n)],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": _usage(),
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def response_events(final: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI's event sequence for ``final``, each with its ``sequence_number``."""
    item = final["output"][0]
    opening = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": opening},
        {"type": "response.in_progress", "response": opening},
    ]
    if item["type"] == "function_call":
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "arguments": "", "status": "in_progress"},
            },
            {
                "type": "response.function_call_arguments.delta",
                "output_index": 0,
                "item_id": item["id"],
                "delta": item["arguments"],
            },
            {
                "type": "response.function_call_arguments.done",
                "output_index": 0,
                "item_id": item["id"],
                "arguments": item["arguments"],
            },
        ]
    else:
        part = item["content"][0]
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **where, "delta": part["text"], "logprobs": []},
            {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
        ]
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def _has_output(body: dict[str, Any]) -> bool:
    items = body.get("input")
    return isinstance(items, list) and any(
        isinstance(i, dict) and i.get("type") == "function_call_output" for i in items
    )


def _offers(body: dict[str, Any], tool: str) -> bool:
    return any(isinstance(t, dict) and t.get("name") == tool for t in body.get("tools") or ())


class CaptureServer:
    def __init__(self, out: Path, call_tool: str | None = None, arguments: str = "{}") -> None:
        self.out = out
        self.call_tool = call_tool
        self.arguments = arguments
        self.count = itertools.count(1)
        out.mkdir(parents=True, exist_ok=True)

    def _record(self, request: Request, raw: bytes, n: int) -> Any:
        headers = {
            name: ("<redacted>" if name.lower() in _SECRET_HEADERS else value)
            for name, value in request.headers.items()
        }
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        meta = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": headers,
            "body_bytes": len(raw),
            "body": parsed,
        }
        (self.out / f"{n:03d}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        (self.out / f"{n:03d}.body").write_bytes(raw)
        return parsed

    async def handle(self, request: Request) -> Response:
        n = next(self.count)
        raw = await request.body()
        body = self._record(request, raw, n)
        if request.method != "POST" or request.url.path not in ("/v1/responses", "/responses"):
            error = {
                "message": f"not captured: {request.method} {request.url.path}",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            return JSONResponse({"error": error}, 404)
        if not isinstance(body, dict):
            error = {
                "message": "body is not a JSON object",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            return JSONResponse({"error": error}, 400)
        tool = (
            self.call_tool
            if self.call_tool and _offers(body, self.call_tool) and not _has_output(body)
            else None
        )
        final = completed_response(body, n, tool, self.arguments)
        if body.get("stream") is not True:
            return JSONResponse(final)
        return StreamingResponse(_sse(response_events(final)), media_type="text/event-stream")

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)])


async def _sse(events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for event in events:
        yield f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--call-tool", default=None)
    parser.add_argument("--arguments", default='{"city": "Paris"}')
    args = parser.parse_args()
    server = CaptureServer(args.out, args.call_tool, args.arguments)
    uvicorn.run(server.app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
