"""``switchboard spend``: what each key, team, model or provider cost in a month.

    switchboard spend                       this month, by key, as a table
    switchboard spend --by team --period 2026-11
    switchboard spend --by model --json     for scripts: cost as an exact decimal string
    switchboard spend --dev                 against the local stack of ``switchboard dev`` (every
                                            subcommand takes --dev: ``switchboard.cli.devenv``)

Reads the spend ledger (``switchboard.billing.spendledger``) in the table named by ``SWITCHBOARD_TABLE``:
one ``Query`` per shard of the month, then sums in ``Decimal``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from switchboard.core.settings import Settings

__all__ = ["Row", "add_parser", "aggregate", "query", "render", "run"]

GROUPS = ("key", "team", "model", "provider", "target")
_COUNTS = ("requests", "errors", "unpriced", "estimated", "input_tokens", "output_tokens", "cached_tokens")


@dataclass
class Row:
    name: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    cost_usd: Decimal = Decimal(0)

    def add(self, item: dict[str, Any]) -> None:
        for name in _COUNTS:
            self.counts[name] += int(item.get(name, {}).get("N", 0))
        self.cost_usd += Decimal(item.get("cost_usd", {}).get("N", "0"))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.counts, "cost_usd": format(self.cost_usd.normalize(), "f")}


def _label(item: dict[str, Any], by: str) -> str:
    def value(name: str) -> str:
        return str(item.get(name, {}).get("S", "-"))

    if by == "key":
        return f"{value('key_name')} ({value('key_id')})"
    return value(by)


def query(client: Any, table: str, period: str) -> Iterator[dict[str, Any]]:
    """Every ledger item of ``period``, across the shards, following pagination."""
    from switchboard.billing.spendledger import SHARDS

    paginator = client.get_paginator("query")
    for shard in range(SHARDS):
        pages = paginator.paginate(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"spend#{period}#{shard}"}},
        )
        for page in pages:
            yield from page.get("Items", [])


def aggregate(items: Iterable[dict[str, Any]], by: str) -> tuple[list[Row], Row]:
    """Rows grouped ``by``, most expensive first, and the total."""
    rows: dict[str, Row] = {}
    total = Row("total")
    for item in items:
        name = _label(item, by)
        rows.setdefault(name, Row(name)).add(item)
        total.add(item)
    ordered = sorted(rows.values(), key=lambda row: (-row.cost_usd, -row.counts["requests"], row.name))
    return ordered, total


def _usd(value: Decimal) -> str:
    return f"{value:.6f}" if value < 1 else f"{value:,.2f}"


def render(rows: list[Row], total: Row, by: str, period: str) -> str:
    """A plain-text table, with a total line."""
    header = [by, "requests", "errors", "input tok", "output tok", "cost (USD)", "unpriced"]
    counted = ("requests", "errors", "input_tokens", "output_tokens")
    lines = [
        [r.name, *(f"{r.counts[c]:,}" for c in counted), _usd(r.cost_usd), f"{r.counts['unpriced']:,}"]
        for r in [*rows, total]
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join(
            [first, *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))]
        )

    out = [f"spend for {period}, by {by}", fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(line) for line in lines[:-1]]
    out += [fmt(["-" * w for w in widths]), fmt(lines[-1])]
    if total.counts["unpriced"]:
        out.append(f"{total.counts['unpriced']:,} requests had no price: their cost is not included.")
    if total.counts["estimated"]:
        out.append(f"{total.counts['estimated']:,} requests were priced on estimated usage.")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    from switchboard.infra import aws

    items = query(aws.client("dynamodb", settings.region), settings.table, args.period)
    rows, total = aggregate(items, args.by)
    if args.json:
        body = {
            "period": args.period,
            "by": args.by,
            "rows": [r.as_json() for r in rows],
            "total": total.as_json(),
        }
        print(json.dumps(body, indent=2))
    elif not rows:
        print(f"no spend recorded for {args.period} in table {settings.table}")
    else:
        print(render(rows, total, args.by, args.period))
    return 0


def _period(value: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a month like 2026-11")
    return value


def add_parser(commands: Any) -> None:
    """Register ``spend`` on the CLI's subparsers."""
    spend = commands.add_parser("spend", help="spend per key, team, model or provider for a month")
    spend.add_argument("--by", choices=GROUPS, default="key", help="group by (default: key)")
    spend.add_argument(
        "--period", type=_period, default=time.strftime("%Y-%m", time.gmtime()), help="month, e.g. 2026-11"
    )
    spend.add_argument("--json", action="store_true", help="machine-readable output")
    spend.set_defaults(func=run)
