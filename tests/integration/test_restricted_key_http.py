"""A key restricted to some aliases never learns the others: a 404 lists only what it may use."""

from __future__ import annotations

from typing import Any

import boto3
import httpx
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.conftest import routing_doc

MODELS = {
    "mine": {"targets": [{"provider": "mock", "model": "echo"}]},
    "secret-project": {"targets": [{"provider": "mock", "model": "echo"}]},
    "my-embed": {"mode": "embeddings", "targets": [{"provider": "mock", "model": "e", "dimensions": 8}]},
    "secret-embed": {"mode": "embeddings", "targets": [{"provider": "mock", "model": "e", "dimensions": 8}]},
}


def test_a_restricted_keys_404_names_only_its_aliases(gateway_factory: Any, mock: Any) -> None:
    gw = gateway_factory(doc=routing_doc(mock.base_url, MODELS))
    store = KeyStore(Table(boto3.client("dynamodb", region_name="us-east-1"), gw.settings.table))
    # "retired" is allowed but gone from the document: the key passes the check, the plan has none.
    key, _ = store.create("narrow", models=["mine", "my-embed", "retired"])
    headers = {"authorization": f"Bearer {key}"}
    messages = [{"role": "user", "content": "hi"}]
    with httpx.Client(base_url=gw.v1, headers=headers, timeout=10) as client:
        answers = {
            "retrieve": client.get("/models/unknown").json()["error"]["message"],
            "chat": client.post("/chat/completions", json={"model": "retired", "messages": messages}),
            "messages": client.post(
                "/messages", json={"model": "retired", "max_tokens": 5, "messages": messages}
            ),
            "embeddings": client.post("/embeddings", json={"model": "retired", "input": "x"}),
        }
        assert [m["id"] for m in client.get("/models").json()["data"]] == ["mine", "my-embed"]
        denied = client.get("/models/secret-project")
    assert denied.status_code == 403
    chat, anthropic, embeddings = answers["chat"], answers["messages"], answers["embeddings"]
    assert chat.status_code == anthropic.status_code == embeddings.status_code == 404
    texts = {
        "retrieve": answers["retrieve"],
        "chat": chat.json()["error"]["message"],
        "messages": anthropic.json()["error"]["message"],
        "embeddings": embeddings.json()["error"]["message"],
    }
    assert texts["retrieve"].endswith("Valid models: mine, my-embed")
    assert texts["chat"].endswith("Valid models: mine") and texts["messages"].endswith("Valid models: mine")
    assert texts["embeddings"].endswith("Valid models: my-embed")
    for where, text in texts.items():
        assert "secret" not in text, where
    # The unrestricted key still sees every alias in the list.
    full = httpx.get(gw.v1 + "/models/unknown", headers=gw.headers(), timeout=10).json()["error"]["message"]
    assert "secret-project" in full and "secret-embed" in full
