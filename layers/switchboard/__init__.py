"""Switchboard: a serverless, OpenAI-compatible LLM gateway.

Modules, one concept each:
    errors     the error tree and the upstream error classes
    schemas    OpenAI wire shapes (requests, responses, chunks, errors)
    settings   typed configuration from the environment
    routing    the routing document, its store and the planner
    providers  one module per upstream family, registered in ``providers/__init__``
    engine     retries, fallback and streaming failover over a plan
    auth       the client-key seam
    api        the Starlette ASGI app
"""

__version__ = "0.1.0"
