"""The engine: retries, backoff, Retry-After, fallback, deadline and stream failover.

Upstreams are ``httpx.MockTransport`` handlers scripted per ``host/model``; ``sleep`` is a fake that
records the delays it was asked for, so backoff is checked exactly and costs no time.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from switchboard.core.errors import AllTargetsFailed, ErrorClass, GatewayError, UpstreamRejected
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.routing.document import RoutingDocument
from switchboard.routing.planner import Plan, plan
from switchboard.upstream.engine import Engine, StreamResult
from switchboard.upstream.secrets import SecretResolver

Factory = Callable[[httpx.Request], Any]

REQUEST = ChatCompletionRequest.model_validate(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
)
STREAM_REQUEST = ChatCompletionRequest.model_validate(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)


# --------------------------------------------------------------------------- scripted upstreams


def completion(text: str, model: str = "up") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


def ok(text: str = "fine") -> Factory:
    return lambda request: httpx.Response(200, json=completion(text))


def fail(status: int, headers: dict[str, str] | None = None, **error: Any) -> Factory:
    body = {
        "error": {
            "message": f"upstream says {status}",
            "type": "server_error",
            "param": None,
            "code": None,
            **error,
        }
    }
    # a streamed body, as from a real transport: the provider may read it either way
    return lambda request: httpx.Response(status, stream=Body([json.dumps(body).encode()]), headers=headers)


def raises(exc: Callable[[], BaseException]) -> Factory:
    def factory(request: httpx.Request) -> Any:
        raise exc()

    return factory


def slow(seconds: float) -> Factory:
    async def factory(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return httpx.Response(200, json=completion("late"))

    return factory


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


ROLE = chunk({"role": "assistant", "content": ""})
FINISH = chunk({}, "stop")
DONE = b"data: [DONE]\n\n"


class Body(httpx.AsyncByteStream):
    """A response body: yields ``parts`` (a number among them is a pause of that many seconds),
    then raises ``error`` if given; remembers being closed."""

    def __init__(self, parts: list[bytes | float], error: BaseException | None = None) -> None:
        self.parts = parts
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                await asyncio.sleep(part)
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


def sse(
    *parts: bytes | float, error: Callable[[], BaseException] | None = None
) -> tuple[Factory, list[Body]]:
    bodies: list[Body] = []

    def factory(request: httpx.Request) -> httpx.Response:
        body = Body(list(parts), error() if error else None)
        bodies.append(body)
        return httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})

    return factory, bodies


class Upstreams:
    """Responses per ``host/model``, used in order; the last one repeats. Records every request."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Factory]] = {}
        self.seen: list[str] = []
        self.requests: list[httpx.Request] = []

    def on(self, key: str, *factories: Factory) -> None:
        self.scripts[key] = list(factories)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.url.host.removesuffix('.test')}/{json.loads(request.content)['model']}"
        self.seen.append(key)
        self.requests.append(request)
        script = self.scripts[key]
        result = (script.pop(0) if len(script) > 1 else script[0])(request)
        if asyncio.iscoroutine(result):
            result = await result
        return result


class FakeSSM:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.reads = 0

    def get_parameter(self, Name: str, WithDecryption: bool) -> dict[str, Any]:
        self.reads += 1
        if Name not in self.values:
            raise RuntimeError(f"AccessDenied for {Name}: arn:aws:iam::123456789012:role/secret-role")
        return {"Parameter": {"Value": self.values[Name]}}


class FakeSecretsManager:
    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        return {"SecretString": f"sm-value-of-{SecretId}"}


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def document(route: dict[str, Any], **defaults: Any) -> RoutingDocument:
    return RoutingDocument.model_validate(
        {
            "version": 1,
            "defaults": defaults or {},
            "providers": {
                "a": {"kind": "openai", "base_url": "http://a.test/v1", "api_key": {"ssm": "/keys/a"}},
                "b": {
                    "kind": "openai",
                    "base_url": "http://b.test/v1",
                    "api_key": {"secretsmanager": "keys/b"},
                },
                "c": {"kind": "openai", "base_url": "http://c.test/v1"},
                "locked": {
                    "kind": "openai",
                    "base_url": "http://locked.test/v1",
                    "api_key": {"ssm": "/keys/missing"},
                },
            },
            "models": {"m": route},
        }
    )


def route(*targets: str, **extra: Any) -> dict[str, Any]:
    return {"targets": [{"provider": t.split("/")[0], "model": t.split("/")[1]} for t in targets], **extra}


class Harness:
    def __init__(self, rand: float = 0.5) -> None:
        self.upstreams = Upstreams()
        self.sleeps = Sleeps()
        self.ssm = FakeSSM({"/keys/a": "sk-provider-a"})
        secrets = SecretResolver(lambda: self.ssm, lambda: FakeSecretsManager(), max_age_s=300)
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self.upstreams))
        self.engine = Engine(self.http, secrets, sleep=self.sleeps, rand=lambda: rand)

    def plan(self, route_: dict[str, Any], **defaults: Any) -> Plan:
        return plan(document(route_, **defaults), "m")

    async def complete(self, route_: dict[str, Any], deadline_s: float = 600.0, **defaults: Any) -> Any:
        return await self.engine.complete(
            REQUEST, self.plan(route_, **defaults), time.monotonic() + deadline_s
        )

    async def stream(self, route_: dict[str, Any], deadline_s: float = 600.0) -> StreamResult:
        return await self.engine.stream(STREAM_REQUEST, self.plan(route_), time.monotonic() + deadline_s)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.http.aclose()


def outcomes(records: list[Any]) -> list[tuple[str, str, int | None]]:
    return [(r.target, str(r.outcome), r.status) for r in records]


# --------------------------------------------------------------------------- retries and fallback


async def test_success_on_the_first_try(h: Harness) -> None:
    h.upstreams.on("a/x", ok("hello"))
    done = await h.complete(route("a/x", "b/y"))
    assert done.completion.choices[0].message.content == "hello"
    assert done.target.label == "a/x"
    assert outcomes(done.attempts) == [("a/x", "ok", 200)]
    assert h.upstreams.seen == ["a/x"] and h.sleeps.delays == []
    sent = h.upstreams.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-provider-a"
    assert str(sent.url) == "http://a.test/v1/chat/completions"
    assert json.loads(sent.content)["model"] == "x"  # the target's model, not the alias


@pytest.mark.parametrize(("attempts", "status"), [(1, 500), (2, 502), (3, 503), (4, 529), (2, 429), (3, 429)])
async def test_retries_per_policy_then_falls_back(h: Harness, attempts: int, status: int) -> None:
    h.upstreams.on("a/x", fail(status))
    h.upstreams.on("b/y", ok("from b"))
    done = await h.complete(route("a/x", "b/y", retry={"attempts": attempts, "base_delay_ms": 100}))
    assert h.upstreams.seen == ["a/x"] * attempts + ["b/y"]
    cls = "rate_limit" if status == 429 else "server"
    assert outcomes(done.attempts) == [("a/x", cls, status)] * attempts + [("b/y", "ok", 200)]
    assert len(h.sleeps.delays) == attempts - 1  # between tries of a target, never before a fallback
    assert done.completion.choices[0].message.content == "from b"


async def test_a_flaky_target_recovers_on_retry(h: Harness) -> None:
    h.upstreams.on("a/x", fail(503), fail(500), ok("third time"))
    done = await h.complete(route("a/x", "b/y", retry={"attempts": 3}))
    assert done.target.label == "a/x"
    assert [o for _, o, _ in outcomes(done.attempts)] == ["server", "server", "ok"]


@pytest.mark.parametrize(
    ("rand", "expected_ms"),
    [
        # step_n = min(max, base * 2**n); delay = step/2 + rand * step/2
        (0.0, [50, 100, 200, 400, 500, 500]),
        (0.5, [75, 150, 300, 600, 750, 750]),
        (1.0, [100, 200, 400, 800, 1000, 1000]),
    ],
)
async def test_backoff_doubles_with_jitter_and_a_cap(rand: float, expected_ms: list[int]) -> None:
    harness = Harness(rand=rand)
    harness.upstreams.on("a/x", fail(500))
    with pytest.raises(AllTargetsFailed):
        await harness.complete(
            route("a/x", retry={"attempts": 7, "base_delay_ms": 100, "max_delay_ms": 1000})
        )
    assert harness.sleeps.delays == pytest.approx([ms / 1000 for ms in expected_ms])
    await harness.http.aclose()


async def test_backoff_jitter_stays_within_bounds_for_any_draw() -> None:
    import random

    rng = random.Random(5)
    for _ in range(20):
        harness = Harness()
        harness.engine._rand = rng.random
        harness.upstreams.on("a/x", fail(502))
        with pytest.raises(AllTargetsFailed):
            await harness.complete(
                route("a/x", retry={"attempts": 5, "base_delay_ms": 200, "max_delay_ms": 1000})
            )
        for n, delay in enumerate(harness.sleeps.delays):
            step = min(1000, 200 * 2**n) / 1000
            assert step / 2 <= delay <= step
        await harness.http.aclose()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "20"}, 20.0),  # exactly the cap is still honored
    ],
)
async def test_retry_after_is_honored_exactly(h: Harness, headers: dict[str, str], expected: float) -> None:
    h.upstreams.on("a/x", fail(429, headers), ok())
    done = await h.complete(route("a/x", "b/y", retry={"attempts": 2, "max_retry_after_s": 20}))
    assert h.sleeps.delays == [expected]
    assert done.target.label == "a/x"


async def test_retry_after_over_the_cap_skips_to_the_next_target_at_once(h: Harness) -> None:
    h.upstreams.on("a/x", fail(429, {"retry-after": "21"}))
    h.upstreams.on("b/y", ok())
    done = await h.complete(route("a/x", "b/y", retry={"attempts": 3, "max_retry_after_s": 20}))
    assert h.sleeps.delays == []
    assert h.upstreams.seen == ["a/x", "b/y"]
    assert done.target.label == "b/y"


async def test_retry_after_is_ignored_when_the_policy_says_so() -> None:
    harness = Harness(rand=0.0)
    harness.upstreams.on("a/x", fail(429, {"retry-after": "30"}), ok())
    policy = {"attempts": 2, "base_delay_ms": 100, "honor_retry_after": False}
    await harness.complete(route("a/x", retry=policy))
    assert harness.sleeps.delays == [0.05]
    await harness.http.aclose()


async def test_retry_after_on_a_server_error_is_honored_too(h: Harness) -> None:
    h.upstreams.on("a/x", fail(503, {"retry-after": "2"}), ok())
    await h.complete(route("a/x", retry={"attempts": 2}))
    assert h.sleeps.delays == [2.0]


@pytest.mark.parametrize(
    "failure",
    [
        raises(lambda: httpx.ReadTimeout("read timed out")),
        raises(lambda: httpx.ConnectTimeout("connect timed out")),
        fail(408),
    ],
    ids=["read-timeout", "connect-timeout", "http-408"],
)
async def test_timeout_class_is_retried_at_most_once(h: Harness, failure: Factory) -> None:
    h.upstreams.on("a/x", failure)
    h.upstreams.on("b/y", ok())
    done = await h.complete(route("a/x", "b/y", retry={"attempts": 5}))
    assert [(t, o) for t, o, _ in outcomes(done.attempts)] == [
        ("a/x", "timeout"),
        ("a/x", "timeout"),
        ("b/y", "ok"),
    ]
    assert len(h.sleeps.delays) == 1


async def test_total_timeout_of_a_target_is_a_timeout() -> None:
    harness = Harness()
    harness.upstreams.on("a/x", slow(5))
    harness.upstreams.on("b/y", ok())
    doc_route = route("a/x", "b/y", retry={"attempts": 4})
    doc_route["targets"][0]["timeouts"] = {"total_s": 0.05}
    started = time.monotonic()
    done = await harness.complete(doc_route)
    assert time.monotonic() - started < 1.0
    assert [o for _, o, _ in outcomes(done.attempts)] == ["timeout", "timeout", "ok"]
    await harness.http.aclose()


def _reset_reported_as_timeout() -> BaseException:
    exc = httpx.ConnectTimeout("connection reset")
    exc.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        lambda: httpx.ConnectError("refused"),
        lambda: httpx.RemoteProtocolError("eof"),
        _reset_reported_as_timeout,
    ],
    ids=["connect-error", "protocol-error", "reset-named-timeout"],
)
async def test_connection_failures_are_server_class(h: Harness, exc: Callable[[], BaseException]) -> None:
    h.upstreams.on("a/x", raises(exc))
    h.upstreams.on("b/y", ok())
    done = await h.complete(route("a/x", "b/y", retry={"attempts": 3}))
    assert outcomes(done.attempts) == [("a/x", "server", None)] * 3 + [("b/y", "ok", 200)]


@pytest.mark.parametrize("status", [400, 422])
async def test_client_errors_are_neither_retried_nor_fallen_back(h: Harness, status: int) -> None:
    h.upstreams.on(
        "a/x", fail(status, type="invalid_request_error", code="invalid_value", param="temperature")
    )
    h.upstreams.on("b/y", ok())
    with pytest.raises(UpstreamRejected) as info:
        await h.complete(
            route("a/x", "b/y", retry={"attempts": 5}, fallback_on=["server", "rate_limit", "timeout"])
        )
    err = info.value
    assert h.upstreams.seen == ["a/x"] and h.sleeps.delays == []
    assert err.status == status
    assert err.body()["error"] == {
        "message": f"a: upstream says {status}",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "invalid_value",
    }
    assert err.headers["x-switchboard-attempts"] == "1"


async def test_an_upstream_404_is_a_502_neither_retried_nor_fallen_back(h: Harness) -> None:
    h.upstreams.on("a/x", fail(404, type="invalid_request_error", code="model_not_found"))
    h.upstreams.on("b/y", ok())
    with pytest.raises(UpstreamRejected) as info:
        await h.complete(route("a/x", "b/y", retry={"attempts": 5}))
    err = info.value
    assert h.upstreams.seen == ["a/x"] and h.sleeps.delays == []
    assert (err.status, err.type, err.code) == (502, "upstream_error", "upstream_not_found")
    assert err.message.startswith("a: upstream says 404") and "routing document" in err.message


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_credential_failure_is_a_502_without_the_upstream_text(
    h: Harness, status: int
) -> None:
    h.upstreams.on("a/x", fail(status, message="Incorrect API key provided: sk-provider-a"))
    h.upstreams.on("b/y", ok())
    with pytest.raises(UpstreamRejected) as info:
        await h.complete(route("a/x", "b/y"))
    err = info.value
    assert (err.status, err.type, err.code) == (502, "upstream_error", "upstream_auth_failed")
    assert "sk-provider-a" not in json.dumps(err.body()) and "Incorrect" not in err.message
    assert h.upstreams.seen == ["a/x"]


async def test_context_window_skips_targets_no_larger_than_the_one_that_overflowed(h: Harness) -> None:
    h.upstreams.on("a/x", fail(400, code="context_length_exceeded"))
    h.upstreams.on("b/same", ok())
    h.upstreams.on("c/big", ok("big"))
    r = route("a/x", "b/same", "c/big")
    for target, window in zip(r["targets"], (8000, 8000, 128000), strict=True):
        target["context_window"] = window
    done = await h.complete(r)
    assert h.upstreams.seen == ["a/x", "c/big"]
    assert done.target.label == "c/big"


async def test_content_policy_falls_back_only_when_configured(h: Harness) -> None:
    h.upstreams.on("a/x", fail(400, code="content_filter"))
    h.upstreams.on("b/y", ok())
    with pytest.raises(UpstreamRejected) as info:
        await h.complete(route("a/x", "b/y"))
    assert info.value.code == "content_filter" and info.value.status == 400
    done = await h.complete(route("a/x", "b/y", fallback_on=["content_policy"]))
    assert done.target.label == "b/y"


async def test_a_class_outside_fallback_on_stops_the_plan(h: Harness) -> None:
    h.upstreams.on("a/x", fail(500))
    h.upstreams.on("b/y", ok())
    with pytest.raises(AllTargetsFailed) as info:
        await h.complete(route("a/x", "b/y", retry={"attempts": 1}, fallback_on=["rate_limit"]))
    assert info.value.status == 502
    assert h.upstreams.seen == ["a/x"]


@pytest.mark.parametrize(
    ("failure", "status", "cls"),
    [
        (fail(500), 502, "server"),
        (fail(429), 429, "rate_limit"),
        (raises(lambda: httpx.ReadTimeout("t")), 504, "timeout"),
    ],
)
async def test_every_target_failing_names_each_attempt(
    h: Harness, failure: Factory, status: int, cls: str
) -> None:
    h.upstreams.on("a/x", failure)
    h.upstreams.on("b/y", failure)
    with pytest.raises(AllTargetsFailed) as info:
        await h.complete(route("a/x", "b/y", retry={"attempts": 1}))
    err = info.value
    assert err.status == status
    assert err.body()["error"]["code"] == "all_targets_failed"
    assert f"a/x: {cls}" in err.message and f"b/y: {cls}" in err.message
    assert err.headers["x-switchboard-attempts"] == "2"
    assert err.headers["x-switchboard-trail"].count(f";{cls};") == 2


async def test_all_rate_limited_tells_the_client_when_to_retry(h: Harness) -> None:
    h.upstreams.on("a/x", fail(429, {"retry-after": "40"}))
    with pytest.raises(AllTargetsFailed) as info:
        await h.complete(route("a/x", retry={"attempts": 3, "max_retry_after_s": 10}))
    assert info.value.status == 429 and info.value.body()["error"]["type"] == "rate_limit_error"
    assert int(info.value.headers["retry-after"]) == 40


async def test_all_rate_limited_is_a_429_retried_at_the_soonest_reset(h: Harness) -> None:
    # a/x says 5 s, then (after the gateway waited those 5 s) 30 s; b/y says 60 s: the soonest
    # reset is a/x's latest word, not its stale first one.
    h.upstreams.on("a/x", fail(429, {"retry-after": "5"}), fail(429, {"retry-after": "30"}))
    h.upstreams.on("b/y", fail(429, {"retry-after": "60"}))
    with pytest.raises(AllTargetsFailed) as info:
        await h.complete(route("a/x", "b/y", retry={"attempts": 2}))
    err = info.value
    assert h.sleeps.delays == [5.0]
    assert err.status == 429 and err.type == "rate_limit_error"
    assert err.headers["retry-after"] == "30" and err.headers["x-should-retry"] == "false"


async def test_rate_limits_mixed_with_server_errors_stay_a_503(h: Harness) -> None:
    h.upstreams.on("a/x", fail(500))
    h.upstreams.on("b/y", fail(429, {"retry-after": "7"}))
    with pytest.raises(AllTargetsFailed) as info:
        await h.complete(route("a/x", "b/y", retry={"attempts": 1}))
    assert info.value.status == 503 and info.value.headers["retry-after"] == "7"


@pytest.mark.parametrize("failure", [fail(500), fail(400), fail(404), fail(401), fail(429)])
async def test_every_plan_failure_tells_sdks_not_to_retry(h: Harness, failure: Factory) -> None:
    h.upstreams.on("a/x", failure)
    with pytest.raises(GatewayError) as info:
        await h.complete(route("a/x", retry={"attempts": 1}))
    assert info.value.headers["x-should-retry"] == "false"


async def test_deadline_exhaustion_is_504_and_bounds_the_plan() -> None:
    harness = Harness()
    harness.upstreams.on("a/x", slow(3))
    harness.upstreams.on("b/y", slow(3))
    started = time.monotonic()
    with pytest.raises(AllTargetsFailed) as info:
        await harness.complete(route("a/x", "b/y", retry={"attempts": 3}), deadline_s=0.1)
    elapsed = time.monotonic() - started
    assert 0.09 < elapsed < 1.0
    assert info.value.status == 504
    assert harness.upstreams.seen == ["a/x"]
    await harness.http.aclose()


async def test_no_retry_is_started_when_its_delay_would_pass_the_deadline(h: Harness) -> None:
    h.upstreams.on("a/x", fail(429, {"retry-after": "5"}))
    h.upstreams.on("b/y", ok())
    done = await h.complete(route("a/x", "b/y", retry={"attempts": 3}), deadline_s=2.0)
    assert h.sleeps.delays == []
    assert done.target.label == "b/y"


async def test_a_deadline_already_passed_makes_no_attempt(h: Harness) -> None:
    h.upstreams.on("a/x", ok())
    with pytest.raises(AllTargetsFailed) as info:
        await h.complete(route("a/x"), deadline_s=-1)
    assert info.value.status == 504
    assert h.upstreams.seen == []


@pytest.mark.parametrize(
    "factory",
    [
        lambda r: httpx.Response(200, content=b'{"id": "x", "truncated'),
        lambda r: httpx.Response(200, json={"foo": 1}),
        lambda r: httpx.Response(200, json={"error": {"message": "overloaded"}}),
    ],
    ids=["truncated-json", "not-a-completion", "error-with-200"],
)
async def test_a_200_that_is_not_a_completion_is_a_server_failure(h: Harness, factory: Factory) -> None:
    h.upstreams.on("a/x", factory)
    h.upstreams.on("b/y", ok())
    done = await h.complete(route("a/x", "b/y", retry={"attempts": 1}))
    assert outcomes(done.attempts) == [("a/x", "server", None), ("b/y", "ok", 200)]


# --------------------------------------------------------------------------- secrets


async def test_secret_failures_are_server_class_and_fall_back(h: Harness) -> None:
    h.upstreams.on("locked/x", ok())
    h.upstreams.on("b/y", ok())
    done = await h.complete(route("locked/x", "b/y", retry={"attempts": 2}))
    assert outcomes(done.attempts) == [("locked/x", "server", None)] * 2 + [("b/y", "ok", 200)]
    assert h.upstreams.seen == ["b/y"]  # the locked target was never called without its key
    assert h.upstreams.requests[0].headers["authorization"] == "Bearer sm-value-of-keys/b"


async def test_secret_failure_message_names_the_reference_not_the_details(h: Harness) -> None:
    h.upstreams.on("locked/x", ok())
    with pytest.raises(AllTargetsFailed) as info:
        await h.complete(route("locked/x", retry={"attempts": 1}))
    assert info.value.status == 502
    assert "123456789012" not in json.dumps(info.value.body())


def blocking_credentials(harness: Harness) -> threading.Event:
    """SSM reads block (as boto3 does, in the resolver's thread) until the returned event is set."""
    original = harness.ssm.get_parameter
    release = threading.Event()

    def get_parameter(**kwargs: Any) -> dict[str, Any]:
        release.wait(5)
        return original(**kwargs)

    harness.ssm.get_parameter = get_parameter  # type: ignore[method-assign]
    return release


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_slow_credential_read_counts_against_the_deadline(stream: bool) -> None:
    harness = Harness()
    release = blocking_credentials(harness)
    good, _ = sse(ROLE, chunk({"content": "ok"}), FINISH, DONE)
    harness.upstreams.on("a/x", good if stream else ok())
    started = time.monotonic()
    try:
        with pytest.raises(AllTargetsFailed) as info:
            if stream:
                await harness.stream(route("a/x"), deadline_s=0.05)
            else:
                await harness.complete(route("a/x"), deadline_s=0.05)
        assert time.monotonic() - started < 0.5
    finally:
        release.set()  # let the abandoned read finish so the loop can close
    assert info.value.status == 504
    assert harness.upstreams.seen == []
    await harness.http.aclose()


async def test_secrets_are_cached_across_attempts(h: Harness) -> None:
    h.upstreams.on("a/x", fail(500), fail(500), ok())
    await h.complete(route("a/x", retry={"attempts": 3}))
    await h.complete(route("a/x"))
    assert h.ssm.reads == 1
    assert {r.headers["authorization"] for r in h.upstreams.requests} == {"Bearer sk-provider-a"}


async def test_a_provider_without_a_key_sends_no_authorization(h: Harness) -> None:
    h.upstreams.on("c/z", ok())
    await h.complete(route("c/z"))
    assert "authorization" not in h.upstreams.requests[0].headers


# --------------------------------------------------------------------------- streaming


async def collect(result: StreamResult) -> list[bytes]:
    """The SSE events the client receives (one write may carry several)."""
    events: list[bytes] = []
    async for part in result.events():
        events.extend(event + b"\n\n" for event in part.split(b"\n\n") if event)
    return events


def texts(events: list[bytes]) -> str:
    out = ""
    for event in events:
        payload = event.removeprefix(b"data: ").strip()
        if payload.startswith(b"{") and b'"choices"' in payload:
            for choice in json.loads(payload)["choices"]:
                out += choice["delta"].get("content") or ""
    return out


async def test_stream_passes_through_and_ends_with_done(h: Harness) -> None:
    factory, _ = sse(ROLE, chunk({"content": "Hel"}), chunk({"content": "lo"}), FINISH, DONE)
    h.upstreams.on("a/x", factory)
    result = await h.stream(route("a/x"))
    events = await collect(result)
    assert texts(events) == "Hello"
    assert events[-1] == DONE
    assert result.interrupted is None
    assert outcomes(result.attempts) == [("a/x", "ok", 200)]


@pytest.mark.parametrize(
    "before_content",
    [
        pytest.param((), id="nothing-sent"),
        pytest.param((ROLE,), id="after-role-chunk"),
        pytest.param((b": keep-alive\n\n", ROLE, chunk({"content": ""})), id="after-empty-deltas"),
    ],
)
async def test_stream_failing_before_the_first_content_falls_over(
    h: Harness, before_content: tuple[bytes, ...]
) -> None:
    broken, bodies = sse(*before_content, error=lambda: httpx.ReadError("connection lost"))
    good, _ = sse(ROLE, chunk({"content": "from b"}), FINISH, DONE)
    h.upstreams.on("a/x", broken)
    h.upstreams.on("b/y", good)
    result = await h.stream(route("a/x", "b/y", retry={"attempts": 1}))
    assert result.target.label == "b/y"
    assert outcomes(result.attempts) == [("a/x", "server", None), ("b/y", "ok", 200)]
    assert bodies[0].closed  # the failed upstream response was released
    events = await collect(result)
    assert texts(events) == "from b"
    assert events[-1] == DONE
    assert not any(b'"error"' in e for e in events)


async def test_stream_ending_before_any_output_falls_over(h: Harness) -> None:
    empty, _ = sse(ROLE, DONE)
    good, _ = sse(ROLE, chunk({"content": "ok"}), FINISH, DONE)
    h.upstreams.on("a/x", empty)
    h.upstreams.on("b/y", good)
    result = await h.stream(route("a/x", "b/y", retry={"attempts": 1}))
    assert result.target.label == "b/y"


async def test_stream_error_status_before_commit_retries_and_falls_over(h: Harness) -> None:
    good, _ = sse(ROLE, chunk({"content": "ok"}), FINISH, DONE)
    h.upstreams.on("a/x", fail(503))
    h.upstreams.on("b/y", good)
    result = await h.stream(route("a/x", "b/y", retry={"attempts": 2}))
    assert outcomes(result.attempts) == [("a/x", "server", 503), ("a/x", "server", 503), ("b/y", "ok", 200)]
    assert len(h.sleeps.delays) == 1


@pytest.mark.parametrize(
    ("tail", "error", "cls"),
    [
        pytest.param((), lambda: httpx.ReadError("connection lost"), "server", id="read-error"),
        pytest.param((), None, "server", id="eof-without-finish"),
        pytest.param((b"data: {not json}\n\n",), None, "server", id="malformed-chunk"),
        pytest.param((), lambda: httpx.ReadTimeout("stalled"), "timeout", id="read-timeout"),
    ],
)
async def test_stream_failing_after_content_ends_with_an_error_event(
    h: Harness, tail: tuple[bytes, ...], error: Callable[[], BaseException] | None, cls: str
) -> None:
    broken, bodies = sse(ROLE, chunk({"content": "Hel"}), chunk({"content": "lo"}), *tail, error=error)
    good, _ = sse(ROLE, chunk({"content": "from b"}), FINISH, DONE)
    h.upstreams.on("a/x", broken)
    h.upstreams.on("b/y", good)
    result = await h.stream(route("a/x", "b/y"))
    assert result.target.label == "a/x"
    events = await collect(result)
    assert texts(events) == "Hello"  # the output already sent is kept, nothing from b is spliced in
    assert DONE not in events
    error_event = json.loads(events[-1].removeprefix(b"data: "))
    assert error_event["error"]["code"] == "stream_interrupted"
    assert error_event["error"]["type"] == "upstream_error"
    assert f"({cls})" in error_event["error"]["message"]
    assert result.interrupted is not None and str(result.interrupted.error_class) == cls
    assert outcomes(result.attempts)[-1][:2] == ("a/x", cls)
    assert h.upstreams.seen == ["a/x"]
    assert bodies[0].closed


async def test_stream_without_done_but_finished_is_complete(h: Harness) -> None:
    factory, _ = sse(ROLE, chunk({"content": "ok"}), FINISH)  # some upstreams close without [DONE]
    h.upstreams.on("a/x", factory)
    events = await collect(await h.stream(route("a/x")))
    assert events[-1] == DONE


async def test_stream_stalling_past_first_token_timeout_falls_over(h: Harness) -> None:
    stalled, _ = sse(2.0, ROLE, chunk({"content": "late"}))
    good, _ = sse(ROLE, chunk({"content": "ok"}), FINISH, DONE)
    h.upstreams.on("a/x", stalled)
    h.upstreams.on("b/y", good)
    r = route("a/x", "b/y", retry={"attempts": 1})
    r["targets"][0]["timeouts"] = {"connect_s": 0.05, "first_token_s": 0.05, "total_s": 10}
    started = time.monotonic()
    result = await h.stream(r)
    assert time.monotonic() - started < 1.0
    assert outcomes(result.attempts)[0][:2] == ("a/x", "timeout")
    assert result.target.label == "b/y"


async def test_stream_past_its_deadline_after_content_ends_with_a_timeout_event(h: Harness) -> None:
    # committed at once on "a", then the upstream stalls past the plan's deadline
    stalling, _ = sse(ROLE, chunk({"content": "a"}), 5.0, chunk({"content": "b"}), FINISH, DONE)
    h.upstreams.on("a/x", stalling)
    started = time.monotonic()
    result = await h.stream(route("a/x"), deadline_s=0.3)
    events = await collect(result)
    assert 0.25 < time.monotonic() - started < 2.0
    assert texts(events) == "a"
    assert b'"stream_interrupted"' in events[-1] and b"(timeout)" in events[-1]
    assert DONE not in events


async def test_stream_all_targets_failing_before_commit_raises(h: Harness) -> None:
    h.upstreams.on("a/x", fail(500))
    with pytest.raises(GatewayError) as info:
        await h.stream(route("a/x", retry={"attempts": 1}))
    assert info.value.status == 502


def test_error_classes_round_trip_through_records() -> None:
    # AttemptRecord.outcome holds the ErrorClass itself; its rendering is the plain value
    from switchboard.core.attempts import AttemptRecord

    record = AttemptRecord("a/x", ErrorClass.RATE_LIMIT, 429, 12.4)
    assert record.render() == "a/x;rate_limit;429;12ms"
    assert AttemptRecord("a/x", ErrorClass.SERVER, None, 0).render() == "a/x;server;-;0ms"


# --------------------------------------------------------------------------- content encoding


def gzipped(status: int, payload: bytes, content_type: str) -> Factory:
    """What an upstream behind a compressing proxy sends: httpx asked for gzip, and got it."""
    packed = gzip.compress(payload)
    parts = [packed[: len(packed) // 2], packed[len(packed) // 2 :]]
    headers = {"content-type": content_type, "content-encoding": "gzip"}
    return lambda request: httpx.Response(status, stream=Body(parts), headers=headers)


async def test_a_gzip_encoded_stream_is_decoded(h: Harness) -> None:
    events = ROLE + chunk({"content": "squeezed"}) + FINISH + DONE
    h.upstreams.on("a/x", gzipped(200, events, "text/event-stream"))
    result = await h.stream(route("a/x", retry={"attempts": 1}))
    assert outcomes(result.attempts) == [("a/x", "ok", 200)]
    assert texts(await collect(result)) == "squeezed"


async def test_a_gzip_encoded_error_body_on_a_stream_is_classified(h: Harness) -> None:
    body = json.dumps(
        {"error": {"message": "maximum context length exceeded", "code": "context_length_exceeded"}}
    )
    h.upstreams.on("a/x", gzipped(400, body.encode(), "application/json"))
    with pytest.raises(UpstreamRejected) as info:
        await h.stream(route("a/x"))
    assert info.value.code == "context_length_exceeded"
    assert info.value.message == "a: maximum context length exceeded"


async def test_a_gzip_encoded_completion_is_decoded(h: Harness) -> None:
    h.upstreams.on("a/x", gzipped(200, json.dumps(completion("packed")).encode(), "application/json"))
    done = await h.complete(route("a/x"))
    assert done.completion.choices[0].message.content == "packed"
    assert done.raw is not None and json.loads(done.raw)["choices"][0]["message"]["content"] == "packed"
