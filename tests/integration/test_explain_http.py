"""``POST /v1/route/explain`` over HTTP with the official OpenAI client, and its agreement with the
call that follows: on every strategy, the target that serves a call is explain's first kept
target the mock answers (explain and the call run the same planning function)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import routing_doc

PRICES = {
    "mock/echo+dear": {"input_per_mtok": 10, "output_per_mtok": 30},
    "backup/echo+cheap": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
    "mock/echo+mid": {"input_per_mtok": 1, "output_per_mtok": 2},
    "mock/fail-500+cheapest": {"input_per_mtok": 0.01, "output_per_mtok": 0.01},
}
MODELS: dict[str, Any] = {
    "chain": {
        "targets": [{"provider": "mock", "model": "fail-500"}, {"provider": "backup", "model": "echo"}]
    },
    "split": {
        "strategy": "weighted",
        "targets": [
            {"provider": "mock", "model": "echo+a", "weight": 1},
            {"provider": "backup", "model": "echo+b", "weight": 1},
        ],
    },
    "ab": {
        "strategy": "weighted",
        "sticky": {"on": "user"},
        "targets": [
            {"provider": "mock", "model": "echo+control", "weight": 1},
            {"provider": "backup", "model": "echo+variant", "weight": 1},
        ],
    },
    "cheap": {
        "strategy": "cheapest",
        "targets": [
            {"provider": "mock", "model": "echo+dear"},
            {"provider": "mock", "model": "fail-500+cheapest"},
            {"provider": "backup", "model": "echo+cheap"},
            {"provider": "mock", "model": "echo+mid"},
        ],
        "retry": {"attempts": 1},
    },
    "quick": {
        "strategy": "fastest",
        "targets": [{"provider": "mock", "model": "echo+slow"}, {"provider": "backup", "model": "echo+fast"}],
    },
    "nested": {
        "targets": [{"provider": "mock", "model": "fail-503"}, {"alias": "split"}],
        "retry": {"attempts": 1},
    },
    "long": {
        "targets": [
            {"provider": "mock", "model": "echo+small", "context_window": 50},
            {"provider": "backup", "model": "echo+large", "context_window": 100000},
        ]
    },
}


@pytest.fixture
def gw(gateway_factory, mock):  # type: ignore[no-untyped-def]
    running = gateway_factory(doc=routing_doc(mock.base_url, MODELS, prices=PRICES))
    router = running.gateway.router
    router.speeds.explore = 0.0
    router.speeds.seed("mock/echo+slow", 2.0)
    router.speeds.seed("backup/echo+fast", 0.1)
    return running


def client(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key=gw.api_key, base_url=gw.v1, max_retries=0)


def explain(gw: Any, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = client(gw).post("/route/explain", body=body, cast_to=object)
    return answer


def kept(answer: dict[str, Any]) -> list[str]:
    return [f"{t['provider']}/{t['model']}" for t in answer["targets"] if t["kept"]]


def served(gw: Any, **body: Any) -> str:
    response = client(gw).chat.completions.with_raw_response.create(**body)
    return f"{response.headers['x-switchboard-provider']}/{response.headers['x-switchboard-model']}"


def answers(label: str) -> bool:
    """The mock's answer for a target: its model string says whether it fails."""
    return "fail-" not in label


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("chain", {}),
        ("split", {}),
        ("ab", {"user": "alice"}),
        ("ab", {"user": "bob"}),
        ("cheap", {"max_tokens": 50}),
        ("quick", {}),
        ("nested", {}),
        ("long", {}),
    ],
    ids=["fallback", "weighted", "sticky-alice", "sticky-bob", "cheapest", "fastest", "nested", "context"],
)
def test_explain_agrees_with_the_call_on_every_strategy(gw: Any, model: str, extra: dict[str, Any]) -> None:
    gw.gateway.router.rand = lambda: 0.7  # the same draw for explain and for the call
    words = " ".join(["word"] * 100) if model == "long" else "hi"
    body = {"model": model, "messages": [{"role": "user", "content": words}], **extra}
    answer = explain(gw, **body)
    expected = next(label for label in kept(answer) if answers(label))
    assert served(gw, **body) == expected, answer


def test_the_explanation_names_reasons_rules_cost_and_admission(gw: Any) -> None:
    answer = explain(gw, model="cheap", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert answer["object"] == "route.explanation"
    assert (answer["requested_model"], answer["model"], answer["strategy"]) == ("cheap", "cheap", "cheapest")
    assert kept(answer) == ["mock/fail-500+cheapest", "backup/echo+cheap", "mock/echo+mid", "mock/echo+dear"]
    assert (
        answer["estimate"]["output_tokens"] == 50 and answer["estimate"]["output_tokens_from"] == "max_tokens"
    )
    costs = [t["estimated_cost_usd"] for t in answer["targets"]]
    assert answer["estimated_cost_usd"] == {"min": costs[0], "max": costs[-1]}
    assert answer["admission"] == {
        "allowed": True,
        "reserved": False,
        "checks": [],
    }  # the test key has no limits
    long = explain(gw, model="long", messages=[{"role": "user", "content": " ".join(["word"] * 100)}])
    assert [(t["model"], t["reason"]) for t in long["targets"]] == [
        ("echo+small", "context_too_small"),
        ("echo+large", "kept"),
    ]


def test_explain_makes_no_upstream_call_and_takes_messages_and_responses_bodies(gw: Any, mock: Any) -> None:
    before = len(mock.requests)
    headers = gw.headers()
    messages = httpx.post(
        gw.v1 + "/route/explain",
        json={
            "model": "ab",
            "max_tokens": 10,
            "system": "be brief",
            "messages": [{"role": "user", "content": "x"}],
            "metadata": {"user_id": "alice"},
        },
        headers=headers,
    )
    assert messages.status_code == 200, messages.text
    assert messages.json()["endpoint"] == "messages"
    responses = httpx.post(
        gw.v1 + "/route/explain",
        json={"model": "ab", "input": "x", "user": "alice", "max_output_tokens": 10},
        headers=headers,
    )
    assert responses.json()["endpoint"] == "responses"
    # Sticky on the user: the Anthropic metadata.user_id and the Responses user name the same person.
    assert (
        kept(messages.json())
        == kept(responses.json())
        == kept(explain(gw, model="ab", user="alice", messages=[{"role": "user", "content": "x"}]))
    )
    assert len(mock.requests) == before  # no upstream call


def test_explain_is_authenticated_and_errors_are_openai_shaped(gw: Any) -> None:
    body = {"model": "chain", "messages": [{"role": "user", "content": "hi"}]}
    unauthenticated = httpx.post(gw.v1 + "/route/explain", json=body)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "missing_api_key"
    unknown = httpx.post(gw.v1 + "/route/explain", json={**body, "model": "nope"}, headers=gw.headers())
    assert unknown.status_code == 404 and "Valid models" in unknown.json()["error"]["message"]
    bad = httpx.post(gw.v1 + "/route/explain?endpoint=fax", json=body, headers=gw.headers())
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "endpoint"
    with pytest.raises(openai.NotFoundError):
        explain(gw, model="nope", messages=[{"role": "user", "content": "hi"}])


def test_the_cli_offline_agrees_with_the_endpoint(gw: Any, mock: Any, tmp_path: Any) -> None:
    from switchboard.cli import main

    path = tmp_path / "routing.json"
    path.write_text(json.dumps(routing_doc(mock.base_url, MODELS, prices=PRICES)))
    for model in ("cheap", "long", "ab"):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "a b c d e " * 30}],
            "max_tokens": 50,
        }
        online = explain(gw, **body, user="alice")
        argv = ["routing", "explain", str(path), "--model", model, "--max-tokens", "50", "--user", "alice"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main([*argv, "--prompt-tokens", str(online["estimate"]["prompt_tokens"])]) == 0
        offline = json.loads(out.getvalue())
        assert offline["targets"] == online["targets"], model


DEV_DOC = Path(__file__).resolve().parents[2] / "infra" / "routing.dev.json"


@pytest.mark.parametrize(
    "model", ["demo-cheapest", "demo-fastest", "demo-nested", "demo-ab", "demo-weighted", "demo-fallback"]
)
def test_the_dev_documents_demo_aliases_explain_and_serve_alike(gateway_factory, mock, model: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(DEV_DOC.read_text().replace("${MOCK_BASE_URL}", mock.base_url))
    running = gateway_factory(doc=doc)
    running.gateway.router.rand = lambda: 0.1
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "user": "dana",
        "max_tokens": 5,
    }
    answer = explain(running, **body)
    expected = next(label for label in kept(answer) if answers(label))
    assert served(running, **body) == expected
    if model == "demo-cheapest":
        assert kept(answer) == ["mock/echo", "mock/echo+dear"]
        free = explain(running, **body, metadata={"tier": "free"})
        assert free["model"] == "mock-echo" and free["rules"][0]["index"] == 0


def test_a_responses_request_is_routed_and_explained_alike(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    models = {
        "big": {"targets": [{"provider": "mock", "model": "echo"}]},
        "small": {"targets": [{"provider": "backup", "model": "echo"}]},
    }
    rules = [{"when": {"endpoint": ["responses"], "metadata": {"tier": "free"}}, "reroute": {"big": "small"}}]
    running = gateway_factory(doc=routing_doc(mock.base_url, models, rules=rules))
    sdk = client(running)
    body = {"model": "big", "input": "hello", "metadata": {"tier": "free"}, "store": False}
    answer: dict[str, Any] = sdk.post("/route/explain", body=body, cast_to=object)
    assert (answer["endpoint"], answer["model"], answer["rules"][0]["index"]) == ("responses", "small", 0)
    served = sdk.responses.with_raw_response.create(**body)
    assert served.headers["x-switchboard-rule"] == "rules[0]: big -> small"
    assert served.headers["x-switchboard-provider"] == "backup"
    chat = sdk.chat.completions.with_raw_response.create(
        model="big", messages=[{"role": "user", "content": "hello"}], metadata={"tier": "free"}, store=True
    )
    assert "x-switchboard-rule" not in chat.headers  # the rule names the responses endpoint only
