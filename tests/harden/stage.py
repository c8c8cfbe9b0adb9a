"""One gateway in this process over moto and the fault server, set up for the fault matrix.

Providers: ``p1``, ``p2``, ``p3`` are the fault server (one per chain position, each with its own
random, un-prefixed key), ``refused`` a closed port, ``hang`` a listener that never accepts,
``resetb`` a port that resets every connection on accept. Every alias ``<fault>:<position>`` is a
three-target fallback chain with the fault at that position; the targets before it answer 503
(so the chain reaches it), the targets after it answer correctly.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from switchboard.billing.costevents import CostEvents
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import seed_aws
from switchboard.http.app import create_app
from switchboard.wiring import Gateway

from tests.conftest import serve_app
from tests.harden.conftest import Keyed, Outputs, provider_key, put_secret, reservations, spent
from tests.harden.faultserver import ECHOES, FAULTS, FaultUpstream, HangingListener, refused_url

POSITIONS = ("first", "middle", "last")
PRICE = {"input_per_mtok": 1000, "output_per_mtok": 2000}  # 10 + 3 tokens = $0.016
TIMEOUTS = {"connect_s": 1, "first_token_s": 2, "total_s": 4}
RETRY = {"attempts": 2, "base_delay_ms": 5, "max_delay_ms": 20, "max_retry_after_s": 2}
DEADLINE_S = 10.0
SLACK_S = 1.5  # scheduling on a shared two-core machine; the gateway's own budget is the deadline
MESSAGES = [{"role": "user", "content": "hi"}]
_SPECIAL = {"refused": "refused", "connect-hang": "hang", "reset-before": "resetb"}


def target(fault: str, slot: int) -> dict[str, str]:
    provider = _SPECIAL.get(fault)
    if provider is not None:
        return {"provider": provider, "model": "ok"}
    return {"provider": f"p{slot}", "model": fault}


def chain(fault: str, position: str) -> list[dict[str, str]]:
    """Three targets with ``fault`` at ``position``: 503s before it, correct answers after it."""
    at = POSITIONS.index(position) + 1
    return [
        target(fault, slot)
        if slot == at
        else {"provider": f"p{slot}", "model": "503" if slot < at else f"ok.{slot}"}
        for slot in (1, 2, 3)
    ]


def routing(urls: dict[str, str], params: dict[str, str]) -> dict[str, Any]:
    providers = {
        name: {"kind": "openai", "base_url": url, "api_key": {"ssm": params[name]}}
        for name, url in urls.items()
    }
    models: dict[str, Any] = {
        f"{fault}:{position}": {"targets": chain(fault, position)}
        for fault in FAULTS
        for position in POSITIONS
    }
    for echo in ECHOES:  # alone: an upstream 4xx is the client's, it never falls back
        models[echo] = {"targets": [{"provider": "p1", "model": echo}]}
    models["ok"] = {"targets": [{"provider": "p1", "model": "ok.1"}]}
    models["embed"] = {
        "mode": "embeddings",
        "targets": [{"provider": "p1", "model": "ok.e", "dimensions": 4}],
    }
    models["soak"] = {"targets": [{"provider": "p1", "model": "ok.1"}, {"provider": "p2", "model": "ok.2"}]}
    served = {
        f"{name}/{model}"
        for name in urls
        for model in ("ok", "ok.1", "ok.2", "ok.3", "ok.e", *FAULTS, *ECHOES)
    }
    return {
        "version": 1,
        "defaults": {"timeouts": TIMEOUTS, "retry": RETRY},
        "providers": providers,
        "models": models,
        "prices": dict.fromkeys(sorted(served), PRICE),
    }


@dataclass
class Stage:
    base_url: str
    table: str
    upstream: FaultUpstream
    gateway: Gateway
    events: list[dict[str, Any]] = field(default_factory=list)
    stops: list[Callable[[], None]] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def close(self) -> None:
        while self.stops:
            self.stops.pop()()


def build(table: str, upstream: FaultUpstream, outputs: Outputs) -> Stage:
    hanging = HangingListener()
    urls = {
        "p1": upstream.url,
        "p2": upstream.url,
        "p3": upstream.url,
        "refused": refused_url(),
        "hang": hanging.url,
        "resetb": upstream.reset_url,
    }
    suffix = uuid.uuid4().hex[:10]
    params = {name: f"/switchboard-harden/{suffix}/{name}" for name in urls}
    for param in params.values():
        key = provider_key()
        outputs.secrets.add(key)
        put_secret(param, key)
    settings = Settings.from_env({}, routing_param=f"/switchboard-harden/{suffix}/routing", table=table)
    seed_aws(settings, json.dumps(routing(urls, params)), "sk-harden-unused-" + suffix, {})
    gateway = Gateway.from_env(settings)
    stage = Stage("", table, upstream, gateway)
    for hook in gateway.hooks:
        if isinstance(hook, CostEvents):
            hook._write = lambda line: _event(stage, outputs, line)
    stage.base_url, stop = serve_app(create_app(gateway))
    stage.stops += [hanging.close, stop]
    return stage


def _event(stage: Stage, outputs: Outputs, line: str) -> None:
    outputs.add(line)
    stage.events.append(json.loads(line))


# --------------------------------------------------------------------- asking and checking


class Answer:
    """One request's answer, read whole, with what the checks need."""

    def __init__(self, response: httpx.Response, elapsed: float) -> None:
        self.status = response.status_code
        self.headers = response.headers
        self.text = response.text
        self.elapsed = elapsed
        self.request_id = response.headers.get("x-request-id", "")
        self.trail = [t for t in response.headers.get("x-switchboard-trail", "").split(",") if t]

    def json(self) -> Any:
        return json.loads(self.text)

    def events(self) -> list[Any]:
        """The ``data:`` payloads of an SSE answer, ``[DONE]`` as the string."""
        found = []
        for line in self.text.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                found.append(data if data == "[DONE]" else json.loads(data))
        return found


def ask(
    stage: Stage, client: Keyed, outputs: Outputs, path: str, body: dict[str, Any], **headers: str
) -> Answer:
    head = {"authorization": f"Bearer {client.secret}", "x-switchboard-timeout": str(DEADLINE_S), **headers}
    started = time.monotonic()
    with httpx.Client(timeout=DEADLINE_S + 30) as http:
        response = http.post(stage.v1 + path, json=body, headers=head)
    answer = Answer(response, time.monotonic() - started)
    outputs.response(answer.status, answer.headers, answer.text)
    outputs.load(
        "fault matrix" if path == "/chat/completions" else "fault matrix, /v1/messages", 1, 1, answer.elapsed
    )
    if answer.elapsed > float(head["x-switchboard-timeout"]) + SLACK_S:
        outputs.count("past_deadline")
    return answer


def settle(stage: Stage, answer: Answer, before: Decimal, outputs: Outputs) -> dict[str, Any]:
    """Wait for the request's cost event and its settlement; check the charge is exact."""
    end = time.monotonic() + 10
    while True:
        events = [e for e in stage.events if e.get("request_id") == answer.request_id]
        if events and not reservations(stage.table):
            break
        assert time.monotonic() < end, f"no cost event or a reservation left for {answer.request_id}"
        time.sleep(0.02)
    assert len(events) == 1, events
    event = events[0]
    cost = Decimal(event.get("cost_usd", "0"))
    charged = spent(stage.table, event["key_id"])[0] - before
    if charged < cost:
        outputs.count("uncharged")
    elif charged > cost:
        outputs.count("double_charged")
    assert charged == cost, (charged, cost)
    assert event["status"] == answer.status
    return event


def check_openai_error(answer: Answer, outputs: Outputs) -> dict[str, Any]:
    body = answer.json()
    error = body.get("error") if isinstance(body, dict) else None
    ok = (
        isinstance(error, dict)
        and set(error) >= {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and isinstance(error["type"], str)
    )
    if not ok:
        outputs.count("unclean_errors")
    assert ok, answer.text
    return error  # type: ignore[return-value]
