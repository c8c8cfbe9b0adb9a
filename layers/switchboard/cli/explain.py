"""``switchboard routing explain``: a routing decision offline, against a document file.

    switchboard routing explain FILE --model gpt-4o --prompt-tokens 120000 [--max-tokens 500]
        [--key-tags batch,ci] [--user alice] [--metadata tier=free ...] [--endpoint chat]
        [--at 2026-12-05T03:00:00Z] [--budget-used key=0.85 ...] [--speed openai/gpt-4o=0.4:80 ...]
        [--seed 7]

Prints what ``POST /v1/route/explain`` answers (without the admission, which needs the live
ledger), from the same ``decide`` function a call uses, so an operator can test an edit before
pushing it. Prices are the document's over the built-in table; ``--speed`` sets a target's
measured time to first token (and throughput) for ``fastest``; ``--seed`` fixes the random draw
of ``weighted`` and of ``fastest``'s exploration (5%).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["add_parser", "run"]


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or ():
        name, sep, setting = value.partition("=")
        if not sep or not name:
            raise ValueError(f"{what} takes NAME=VALUE, got {value!r}")
        pairs[name] = setting
    return pairs


def _when(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace, read: Callable[[str], str]) -> dict[str, Any]:
    """The explanation for ``args`` (``read`` gives the document's text from its path)."""
    from switchboard.routing.decide import RequestFacts
    from switchboard.routing.document import load_document
    from switchboard.routing.explain import explanation
    from switchboard.routing.pricing import PriceBook
    from switchboard.routing.router import Router
    from switchboard.routing.speed import SpeedBoard
    from switchboard.upstream.providers import REGISTRY
    from switchboard.wiring import price_lookup

    document, revision = load_document(read(args.file), REGISTRY)
    speeds = SpeedBoard()
    for label, figures in _pairs(args.speed, "--speed").items():
        ttft, _, tps = figures.partition(":")
        speeds.seed(label, float(ttft), float(tps) if tps else None)
    budget = {scope: float(v) for scope, v in _pairs(args.budget_used, "--budget-used").items()}
    facts = RequestFacts(
        endpoint=args.endpoint,
        prompt_tokens=args.prompt_tokens,
        max_tokens=args.max_tokens,
        user=args.user,
        metadata=_pairs(args.metadata, "--metadata"),
        key_tags=tuple(t for t in (args.key_tags or "").split(",") if t),
        budget_used=budget,
        now=_when(args.at),
    )
    rand = random.Random(args.seed).random if args.seed is not None else random.random
    router = Router(price_lookup(PriceBook()), speeds, rand=rand)  # the prices metering uses
    decision = router.decide_facts(document, args.model, facts)
    return explanation(decision, revision)


def add_parser(routing: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """``explain`` under ``switchboard routing``."""
    explain = routing.add_parser("explain", help="where a request would go, offline, against a file")
    explain.add_argument("file", help="path, or - for stdin")
    explain.add_argument("--model", required=True, help="the alias the request names")
    explain.add_argument("--prompt-tokens", type=int, required=True, help="the request's prompt tokens")
    explain.add_argument("--max-tokens", type=int, help="the request's max_tokens (default: 4096 assumed)")
    explain.add_argument("--key-tags", help="the key's tags, comma-separated")
    explain.add_argument("--user", help="the request's user field")
    explain.add_argument("--metadata", action="append", metavar="K=V", help="a metadata field (repeatable)")
    explain.add_argument("--endpoint", default="chat", choices=["chat", "messages", "responses"])
    explain.add_argument("--at", help="the time, ISO 8601 (default now; UTC unless it says otherwise)")
    explain.add_argument(
        "--budget-used", action="append", metavar="SCOPE=FRACTION", help="e.g. key=0.85 (repeatable)"
    )
    explain.add_argument(
        "--speed",
        action="append",
        metavar="TARGET=TTFT[:TPS]",
        help="a measured speed, e.g. openai/gpt-4o=0.4:80",
    )
    explain.add_argument("--seed", type=int, help="fix the random draw (weighted, exploration)")
    explain.set_defaults(func=func)


def dumps(answer: dict[str, Any]) -> str:
    return json.dumps(answer, indent=2)
