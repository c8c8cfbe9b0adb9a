"""Switchboard: a serverless, OpenAI-compatible LLM gateway.

One package in layers, each importing only from the layers below it (``tests/test_layers.py``
holds the rule; ``docs/architecture.md`` draws it):

    http       the app (``create_app``), the ASGI front, CORS, request steps, the endpoints
    wiring     ``Gateway.from_env``: the one place that builds the object graph
    limits     keys, budgets and rates (a hook on the exchange)
    billing    prices, the meter, cost events and the spend ledger (a hook on the exchange)
    exchange   one request's record and the hook protocol (admit, settle)
    upstream   the engine (retries, fallback, streaming failover), providers, secrets
    routing    the routing document, its store, the planner and the rules
    infra      AWS clients, the upstream HTTP transport, tracing, logs, refresh
    core       errors, wire schemas, SSE, settings, money, the principal

``cli`` and ``devtools`` sit outside the layers and do not ship in the Lambda layer.
"""

__version__ = "0.1.0"
