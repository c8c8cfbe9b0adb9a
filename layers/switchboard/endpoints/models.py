"""What ``GET /v1/models`` says about an alias, from what the routing document knows.

OpenAI's ``Model`` requires ``id``, ``object``, ``created`` and ``owned_by`` and allows more
properties, so the optional ones are added only when known: ``context_window`` (the route's, else
the smallest of its targets' when every target declares one: the window a request can count on
whichever target serves it), ``max_output_tokens``, ``modalities`` (input), ``dimensions``
(embeddings), ``description`` and the ``endpoints`` that serve the alias.
"""

from __future__ import annotations

from switchboard.routing.document import RoutingDocument
from switchboard.schemas import Model

__all__ = ["describe"]

_ENDPOINTS = {"chat": ["/v1/chat/completions", "/v1/messages"], "embeddings": ["/v1/embeddings"]}


def describe(doc: RoutingDocument, alias: str) -> Model:
    route = doc.models[alias]
    windows = [t.context_window for t in route.targets]
    context = route.context_window
    if context is None and windows and all(w is not None for w in windows):
        context = min(w for w in windows if w is not None)
    return Model(
        id=alias,
        owned_by=route.owned_by or route.targets[0].provider or route.targets[0].alias or "switchboard",
        context_window=context,
        max_output_tokens=route.max_output_tokens,
        modalities=sorted(route.modalities) if route.modalities else None,
        endpoints=_ENDPOINTS[route.mode],
        dimensions=route.dimensions,
        description=route.description,
    )
