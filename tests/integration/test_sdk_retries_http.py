"""What the SDKs do with the gateway's failures, measured in upstream calls.

The OpenAI and Anthropic SDKs retry 429 and 5xx twice by default. The gateway has already retried
and fallen back under its routing policy when it gives up, so it sends ``x-should-retry: false``
and one hard failure costs exactly the calls the policy allows, not three times that. When every
target is rate limited the answer is a 429 (the SDK's ``RateLimitError``), not a 503.
"""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway

MSG = [{"role": "user", "content": "ping"}]


def _gateway(gateway_factory: Any, failing: str) -> tuple[RunningGateway, str]:
    """Two targets that both fail with ``failing``, two tries each: 4 upstream calls per plan."""
    model = f"{failing}+id-{uuid.uuid4().hex[:8]}"  # a unique model string: its calls are countable
    route = {
        "targets": [{"provider": "mock", "model": model}, {"provider": "backup", "model": model}],
        "retry": {"attempts": 2, "base_delay_ms": 5, "max_delay_ms": 20},
    }
    return gateway_factory(models={"m": route}), model


def _calls(mock: Any, model: str) -> int:
    return sum(1 for r in mock.requests if (r["json"] or {}).get("model") == model)


@pytest.mark.parametrize(
    ("failing", "error"),
    [("fail-500", openai.InternalServerError), ("fail-429", openai.RateLimitError)],
)
def test_one_hard_failure_costs_only_the_gateways_own_attempts(
    gateway_factory: Any, mock: Any, failing: str, error: type[Exception]
) -> None:
    gw, model = _gateway(gateway_factory, failing)
    sdk = openai.OpenAI(base_url=gw.v1, api_key=API_KEY)  # max_retries: the default, 2
    assert sdk.max_retries == 2
    with pytest.raises(error) as caught:
        sdk.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    assert _calls(mock, model) == 4  # 2 targets x 2 tries; without the header, 3 x 4 = 12
    assert caught.value.response.headers["x-should-retry"] == "false"  # type: ignore[attr-defined]


def test_the_anthropic_sdk_does_not_retry_either(gateway_factory: Any, mock: Any) -> None:
    gw, model = _gateway(gateway_factory, "fail-429")
    sdk = anthropic.Anthropic(base_url=gw.base_url, api_key=API_KEY)
    assert sdk.max_retries == 2
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(model="m", max_tokens=5, messages=MSG)  # type: ignore[arg-type]
    assert _calls(mock, model) == 4
