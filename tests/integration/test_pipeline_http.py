"""The one request pipeline (``switchboard.http.pipeline``): an endpoint defined only by its own
parts, here in the test (a name, a schema, a call, an error shape), gets every stage through the
app over HTTP: the key's check, admission by the hooks, the call over the plan, metering against
the routing document's price, settlement, the cost event, and its own error shape for every
failure (a bad key, a bad body, a refusal at admission, an upstream that failed). The steps it
runs in order are ``http.request``'s (request id, deadline, key, body, routing document)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.responses import Response
from switchboard.billing.costevents import CostEvents
from switchboard.billing.metering import Meter
from switchboard.core.errors import AttemptFailed, ErrorClass, GatewayError, InvalidRequest, RateLimited
from switchboard.core.schemas import ChatCompletionRequest, Usage
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import seed_aws
from switchboard.devtools.mockupstream import MockUpstream
from switchboard.exchange import Exchange
from switchboard.http.app import create_app
from switchboard.http.pipeline import Answer, Context, Endpoint, Streamed, handler
from switchboard.routing.planner import PlannedTarget
from switchboard.wiring import Gateway

from tests.conftest import API_KEY, routing_doc, serve_app


class ToyRequest:
    def __init__(self, model: str, text: str, stream: bool) -> None:
        self.model, self.text, self.stream = model, text, stream


class Toy(Endpoint[ToyRequest]):
    """Upper-cases ``text`` "at" the plan's target (a target of model ``fail-500`` fails); streams
    it one letter an event when asked. Its own error shape: ``{"toy_error": ..., "status": ...}``."""

    name = "toy"

    def parse(self, raw: bytes) -> ToyRequest:
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise InvalidRequest("a toy request needs 'text'", param="text")
        return ToyRequest(str(body.get("model")), body["text"], bool(body.get("stream")))

    def prepare(self, ctx: Context[ToyRequest]) -> ChatCompletionRequest:
        messages = [{"role": "user", "content": ctx.body.text}]
        return ChatCompletionRequest.model_validate(
            {"model": ctx.body.model, "messages": messages, "stream": ctx.body.stream}
        )

    async def call(self, ctx: Context[ToyRequest]) -> Answer | Streamed:
        async def attempt(target: PlannedTarget) -> str:
            if target.model == "fail-500":
                raise AttemptFailed(ErrorClass.SERVER, f"{target.label} failed", status=500)
            return ctx.body.text.upper()

        text, target, attempts = await ctx.gateway.engine.run(ctx.plan, ctx.deadline, attempt)
        meter = Meter()
        if ctx.body.stream:  # no usage reported: the pipeline estimates it from the letters sent
            return Streamed(target, attempts, _letters(text, meter), meter)
        meter.usage = Usage(prompt_tokens=1000, completion_tokens=2000, total_tokens=3000)
        return Answer(target, attempts, json.dumps({"toy": text}).encode(), meter)

    def error(self, exc: GatewayError, headers: dict[str, str]) -> Response:
        body = {"toy_error": exc.message, "status": exc.status}
        return Response(json.dumps(body), exc.status, {**headers, **exc.headers}, "application/json")


async def _letters(text: str, meter: Meter) -> AsyncIterator[bytes]:
    for letter in text:
        meter.chars += 1
        yield f"data: {letter}\n\n".encode()
    meter.completed = True


class Recorder:
    def __init__(self) -> None:
        self.refuse = False
        self.admitted: list[str] = []
        self.settled: list[Exchange] = []

    async def admit(self, ex: Exchange) -> None:
        if self.refuse:
            raise RateLimited("toy refusal", headers={"retry-after": "7"})
        self.admitted.append(ex.request_id)

    async def settle(self, ex: Exchange) -> None:
        self.settled.append(ex)


@dataclass
class Stage:
    url: str
    key: str
    recorder: Recorder
    lines: list[str]

    def post(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key or self.key}"}
        return httpx.post(self.url + "/v1/toy", json=body, headers=headers)

    def events(self) -> list[dict[str, Any]]:
        """The cost events written so far."""
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def toy(aws: str, mock: MockUpstream) -> Iterator[Stage]:
    doc = routing_doc(
        mock.base_url,
        {
            "toy": {"targets": [{"provider": "mock", "model": "echo"}]},
            "down": {"targets": [{"provider": "mock", "model": "fail-500"}], "retry": {"attempts": 1}},
        },
        prices={"mock/echo": {"input_per_mtok": "1", "output_per_mtok": "2"}},
    )
    settings = Settings.from_env({}, routing_param=f"/switchboard-test/{uuid.uuid4().hex[:10]}/routing")
    seed_aws(settings, json.dumps(doc), API_KEY, {})
    gateway = Gateway.from_env(settings)
    lines: list[str] = []
    gateway.hooks[:] = [
        CostEvents(write=lines.append) if isinstance(h, CostEvents) else h for h in gateway.hooks
    ]
    recorder = Recorder()
    gateway.hooks.append(recorder)
    app = create_app(gateway)
    app.routes["/v1/toy"] = handler(Toy())  # as http.app routes its endpoints: the POST route
    url, stop = serve_app(app)
    yield Stage(url, API_KEY, recorder, lines)
    stop()


def test_a_toy_endpoint_is_admitted_metered_settled_and_costed(toy: Stage) -> None:
    response = toy.post({"model": "toy", "text": "hi"})
    assert response.status_code == 200 and response.json() == {"toy": "HI"}
    request_id = response.headers["x-request-id"]
    assert response.headers["x-switchboard-provider"] == "mock"
    assert response.headers["x-switchboard-routing-version"]
    # metered against the document's price: 1000 in at $1/Mtok, 2000 out at $2/Mtok
    assert response.headers["x-switchboard-cost-usd"] == "0.005"
    assert toy.recorder.admitted == [request_id]
    [ex] = toy.recorder.settled
    assert (ex.request_id, ex.kind, ex.outcome, ex.status) == (request_id, "toy", "ok", 200)
    assert ex.cost_usd == Decimal("0.005") and not ex.usage_estimated
    [event] = toy.events()
    assert (event["endpoint"], event["request_id"], event["cost_usd"]) == ("toy", request_id, "0.005")
    assert event["usage_estimated"] is False


def test_a_toy_stream_is_settled_after_its_last_byte_on_an_estimate(toy: Stage) -> None:
    response = toy.post({"model": "toy", "text": "abcdefgh", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == "".join(f"data: {c}\n\n" for c in "ABCDEFGH")
    wait_for(lambda: len(toy.recorder.settled) == 1)
    [ex] = toy.recorder.settled
    assert (ex.kind, ex.outcome) == ("toy", "ok")
    assert ex.usage_estimated and ex.usage is not None and ex.usage.completion_tokens == 2  # 8 letters
    wait_for(lambda: len(toy.events()) == 1)
    assert toy.events()[0]["usage_estimated"] is True and toy.events()[0]["stream"] is True


def test_every_failure_comes_in_the_toy_s_own_error_shape(toy: Stage) -> None:
    bad_key = toy.post({"model": "toy", "text": "hi"}, key="sk-nobody")
    assert bad_key.status_code == 401 and bad_key.json()["status"] == 401 and "toy_error" in bad_key.json()
    bad_body = toy.post({"model": "toy"})
    assert bad_body.status_code == 400 and bad_body.json()["toy_error"] == "a toy request needs 'text'"
    unknown = toy.post({"model": "nope", "text": "hi"})
    assert unknown.status_code == 404 and "toy_error" in unknown.json()
    assert toy.recorder.admitted == [] and toy.recorder.settled == []  # none reached admission

    down = toy.post({"model": "down", "text": "hi"})
    assert down.status_code == 502 and "toy_error" in down.json()
    [failed] = toy.recorder.settled
    assert (failed.outcome, failed.status, failed.kind) == ("error", 502, "toy")

    toy.recorder.refuse = True
    refused = toy.post({"model": "toy", "text": "hi"})
    assert refused.status_code == 429 and refused.json() == {"toy_error": "toy refusal", "status": 429}
    assert refused.headers["retry-after"] == "7"
    assert toy.recorder.settled[-1].outcome == "rejected"
    assert [e["endpoint"] for e in toy.events()] == ["toy", "toy"]  # the failure and the refusal


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)
