"""``switchboard keys ...`` and ``switchboard budgets ...``: virtual keys, limits and the sweeper.

    switchboard keys create --name NAME [--team T] [--user U] [--tags a,b] [--models a,b|*]
                            [--budget-usd X [--period day|week|month|total]] [--rpm N] [--tpm N]
                            [--lanes N | --lanes auto --peak-rps R] [--expires ISO] [--json]
    switchboard keys list [--all] [--json]
    switchboard keys show ID [--json]                      the key and its current use
    switchboard keys update ID [the create flags] [--no-budget] [--no-rpm] [--no-tpm] [--no-expiry]
    switchboard keys revoke ID [--json]
    switchboard keys rotate ID [--grace-s S] [--json]      a new secret; the old one lasts S seconds
    switchboard budgets set SCOPE:ID [--budget-usd X --period P] [--rpm N] [--tpm N]
                            [--lanes N | --lanes auto --peak-rps R]
                                                           SCOPE is team, user or model (an alias)
    switchboard budgets show SCOPE:ID [--json]             limits and use (SCOPE may be key)
    switchboard budgets list [--json]
    switchboard budgets clear SCOPE:ID
    switchboard budgets sweep [--json]                     close expired reservations: at their
                                                           recorded cost, else refunded

Secrets are printed once, by create and rotate; only their SHA-256 is stored. Errors go to stderr
with exit status 1 (a key that does not exist, or is revoked) or 2 (bad arguments).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from switchboard.core.principal import Limits, Period, Scope
from switchboard.core.settings import Settings
from switchboard.limits.model import LANE_RPS, MAX_LANES, MIN_LANE_RPM, lanes_for, rate_window

__all__ = ["register"]


# ------------------------------------------------------------------------------ argument types


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of US dollars") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"a budget must be a non-negative amount of US dollars, not {text}")
    return value


_AUTO = 0  # --lanes auto: from --peak-rps
_TPM_LANE_WARN = 128_000  # a lane's tpm share below this refuses large requests (request_too_large)


def _lanes(text: str) -> int:
    if text == "auto":
        return _AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LANES:
        raise argparse.ArgumentTypeError(
            f"lanes go from 1 to {MAX_LANES} (a 402 reads every lane), not {text}"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a rate limit must be at least 1 per minute, not {text}")
    return value


def _when(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-12-31 or 2026-12-31T23:59:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _scoped(text: str) -> tuple[Scope, str]:
    scope, sep, ident = text.partition(":")
    try:
        parsed = Scope(scope)
    except ValueError:
        parsed = None
    if not sep or not ident or parsed is None:
        choices = ", ".join(s.value for s in Scope)
        raise argparse.ArgumentTypeError(f"{text!r}: expected SCOPE:ID with SCOPE one of {choices}")
    return parsed, ident


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# ------------------------------------------------------------------------------------ helpers


class _Failure(Exception):
    """A clear, expected error: printed without a traceback, exit status 1."""


def _settings() -> Settings:
    return Settings.from_env()


def _table() -> Any:
    from switchboard.limits.table import Table

    settings = _settings()
    return Table.from_settings(settings.table, settings.region)


def _keys() -> Any:
    from switchboard.limits.keys import KeyStore

    return KeyStore(_table())


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _limits_text(limits: dict[str, Any]) -> str:
    parts = []
    if limits.get("budget_usd") is not None:
        parts.append(f"budget ${limits['budget_usd']} per {limits['period']}")
    if limits.get("rpm") is not None:
        parts.append(f"{limits['rpm']} rpm")
    if limits.get("tpm") is not None:
        parts.append(f"{limits['tpm']} tpm")
    if limits.get("lanes"):
        parts.append(f"in {limits['lanes']} lanes")
    return ", ".join(parts) or "no limits"


def _key_text(key: dict[str, Any]) -> str:
    models = key["models"] if isinstance(key["models"], str) else ",".join(key["models"])
    lines = [
        f"{key['id']}  {key['name']}  [{key['status']}]  {key['prefix']}...",
        f"  team {key['team'] or '-'}, user {key['user'] or '-'}, tags {','.join(key['tags']) or '-'}",
        f"  models {models}; overrides {','.join(key.get('overrides') or []) or '-'}; {_limits_text(key)}",
        f"  created {key['created_at']}"
        + (f", expires {key['expires_at']}" if key["expires_at"] else "")
        + (f", revoked {key['revoked_at']}" if key["revoked_at"] else ""),
    ]
    return "\n".join(lines)


def _limits_from(args: argparse.Namespace, base: Limits | None = None) -> Limits:
    base = base or Limits()
    if args.period is not None and args.budget_usd is None and base.budget_usd is None:
        raise _Failure("--period needs --budget-usd (the budget it is the period of)")
    return Limits(
        budget_usd=args.budget_usd if args.budget_usd is not None else base.budget_usd,
        period=Period(args.period) if args.period else base.period,
        rpm=args.rpm if args.rpm is not None else base.rpm,
        tpm=args.tpm if args.tpm is not None else base.tpm,
    )


def _plain(value: Any) -> str:
    """A ledger amount without exponent or trailing zeros: ``0``, ``0.0000039``, ``12.5``."""
    return format(Decimal(value).normalize(), "f")


def _use(scope: Scope, ident: str, limits: Limits) -> dict[str, Any]:
    """The current period's budget use and the current minute's rate use of one scope."""
    from switchboard.limits.hook import scope_lines
    from switchboard.limits.ledger import Ledger, RateLine

    now = time.time()
    budgets, rates = scope_lines([(scope, ident, ident, limits)], now)
    ledger = Ledger(_table())
    found = ledger.read([key for line in rates for key in line.keys])  # every lane
    use: dict[str, Any] = {}
    for line in budgets:
        values = ledger.used(line)  # its lanes summed
        use["budget"] = {
            "period_id": line.period_id,
            "limit_usd": str(line.limit),
            "spent_usd": _plain(values.get("spent", 0)),
            "reserved_usd": _plain(values.get("reserved", 0)),
            "used_usd": _plain(values.get("used", 0)),
            "requests": int(values.get("requests", 0)),
            "resets_at": line.resets_at.isoformat().replace("+00:00", "Z") if line.resets_at else None,
        }
    for rate in rates:
        values = RateLine.summed([found.get((k["pk"]["S"], k["sk"]["S"]), {}) for k in rate.keys])
        _, left = rate_window(now)
        use["rate"] = {
            "requests_this_minute": int(values["req"]),
            "tokens_this_minute": int(values["tok"]),
            "resets_in_s": round(left, 1),
        }
    return use


def _use_text(use: dict[str, Any]) -> str:
    lines = []
    if "budget" in use:
        b = use["budget"]
        lines.append(
            f"  {b['period_id']}: spent ${b['spent_usd']}, reserved ${b['reserved_usd']} of ${b['limit_usd']}"
            f" ({b['requests']} requests)" + (f", resets {b['resets_at']}" if b["resets_at"] else "")
        )
    if "rate" in use:
        r = use["rate"]
        lines.append(
            f"  this minute: {r['requests_this_minute']} requests, {r['tokens_this_minute']} tokens "
            f"(window ends in {r['resets_in_s']} s)"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ keys


def _overrides(names: list[str] | None) -> list[str] | None:
    """``--overrides``: ``*`` is every field, ``none`` (or empty) none; others must be known."""
    from switchboard.routing.overrides import FIELDS

    if names is None:
        return None
    if names == ["*"]:
        return ["models", "provider"]
    if names in ([], ["none"]):
        return []
    unknown = sorted(set(names) - FIELDS)
    if unknown:
        raise _Failure(f"--overrides: unknown {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    return names


def cmd_keys_create(args: argparse.Namespace) -> int:
    limits = _limits_from(args)
    if args.lanes is not None:
        limits = dataclasses.replace(limits, lanes=_chosen_lanes(args, limits, None))
    if args.expires is not None and args.expires <= time.time():
        raise _Failure("--expires is in the past")
    models = None if args.models in (None, ["*"]) else args.models
    secret, record = _keys().create(
        args.name,
        team=args.team,
        user=args.user,
        tags=args.tags or (),
        models=models,
        overrides=_overrides(args.overrides) or (),
        limits=limits,
        expires_at=args.expires,
    )
    public = record.public()
    _emit(
        args,
        {"key": secret, **public},
        f"created {record.id} ({record.name}): {_limits_text(public)}\n"
        f"secret (shown once, it cannot be recovered): {secret}",
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    records = _keys().list(include_revoked=args.all)
    public = [r.public() for r in records]
    text = "\n".join(_key_text(k) for k in public) or "no keys"
    _emit(args, public, text)
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    record = _keys().get(args.id)
    public = record.public()
    use = _use(Scope.KEY, record.id, record.limits) if not record.limits.empty else {}
    _emit(args, {**public, "use": use}, _key_text(public) + ("\n" + _use_text(use) if use else ""))
    return 0


def _access_changes(args: argparse.Namespace) -> dict[str, Any]:
    """What ``keys update`` changes of the key's tags, models and overrides."""
    changes: dict[str, Any] = {}
    if args.tags is not None:
        changes["tags"] = args.tags
    if args.models is not None:
        changes["models"] = None if args.models == ["*"] else args.models
    if args.overrides is not None:
        changes["overrides"] = _overrides(args.overrides)
    return changes


def cmd_keys_update(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for name in ("name", "team", "user"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name) or None
    changes.update(_access_changes(args))
    if args.no_budget and args.budget_usd is not None:
        raise _Failure("--budget-usd and --no-budget contradict each other")
    if args.budget_usd is not None or args.no_budget:
        changes["budget_usd"] = None if args.no_budget else args.budget_usd
    if args.period is not None:
        changes["period"] = Period(args.period)
    for name in ("rpm", "tpm"):
        if getattr(args, f"no_{name}"):
            changes[name] = None
        elif getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.no_expiry:
        changes["expires_at"] = None
    elif args.expires is not None:
        changes["expires_at"] = args.expires
    store = _keys()
    if args.lanes is not None or args.peak_rps is not None:
        changes["lanes"] = _key_lanes(args, store.get(args.id).limits, changes)
    if not changes:
        raise _Failure("nothing to update: give at least one flag (see 'switchboard keys update -h')")
    if "period" in changes and "budget_usd" not in changes and store.get(args.id).limits.budget_usd is None:
        raise _Failure("--period needs a budget: give --budget-usd too")
    record = store.update(args.id, **changes)
    public = record.public()
    _emit(args, public, "updated\n" + _key_text(public))
    return 0


def _key_lanes(args: argparse.Namespace, current: Limits, changes: dict[str, Any]) -> int:
    """The lanes ``keys update`` writes, checked against the limits the update leaves."""
    after = Limits(
        budget_usd=changes.get("budget_usd", current.budget_usd),
        period=changes.get("period", current.period),
        rpm=changes.get("rpm", current.rpm),
        tpm=changes.get("tpm", current.tpm),
    )
    lanes = _chosen_lanes(args, after, current)
    _warn_relaned(f"key {args.id}", current, lanes)
    return lanes


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    record = _keys().revoke(args.id)
    public = record.public()
    _emit(args, public, f"revoked {record.id} ({record.name}); it fails within the gateway's key cache age")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    if args.grace_s < 0:
        raise _Failure("--grace-s must be 0 or more seconds")
    secret, record = _keys().rotate(args.id, grace_s=args.grace_s)
    public = record.public()
    old = f"the old secret works {args.grace_s} s more" if args.grace_s else "the old secret is revoked"
    _emit(
        args,
        {"key": secret, **public},
        f"rotated {record.id} ({record.name}); {old}\nsecret (shown once, it cannot be recovered): {secret}",
    )
    return 0


# --------------------------------------------------------------------------------- budgets


def _limit_store() -> Any:
    from switchboard.limits.definitions import LimitStore

    return LimitStore(_table())


def cmd_budgets_set(args: argparse.Namespace) -> int:
    scope, ident = args.target
    if scope is Scope.KEY:
        raise _Failure("a key's limits are set with 'switchboard keys update ID --budget-usd ...'")
    if args.budget_usd is None and args.rpm is None and args.tpm is None:
        raise _Failure("give --budget-usd, --rpm or --tpm (or use 'budgets clear')")
    limits = _limits_from(args)
    before = _limit_store().get(scope, ident)
    lanes = _chosen_lanes(args, limits, before)
    limits = dataclasses.replace(limits, lanes=lanes)
    _warn_relaned(f"{scope.value}:{ident}", before, lanes)
    _limit_store().put(scope, ident, limits)
    data = {"scope": scope.value, "id": ident, **_limits_json(limits)}
    _emit(args, data, f"{scope.value}:{ident}: {_limits_text(data)} (in force within the cache age)")
    return 0


def _warn_relaned(name: str, before: Limits | None, lanes: int) -> None:
    """Lanes that change under limits in use lose sight of this period's and minute's use."""
    if before is not None and not before.empty and before.lanes != lanes:
        print(
            f"warning: {name} goes from {before.lanes} to {lanes} lanes; this period's (and this "
            "minute's) use in the old layout is not seen by the new one (docs/limits.md, 'At scale')",
            file=sys.stderr,
        )


def _chosen_lanes(args: argparse.Namespace, limits: Limits, before: Limits | None) -> int:
    """The lanes ``budgets set`` writes: ``--lanes N``, or ``auto`` from ``--peak-rps`` (one per
    ``LANE_RPS``), else the ones already set. A lane's share of an rpm must be at least
    ``MIN_LANE_RPM`` requests (``auto`` lowers the lanes to that); a small tpm share is warned of."""
    if args.peak_rps is not None and args.lanes != _AUTO:
        raise _Failure("--peak-rps goes with --lanes auto")
    if args.lanes == _AUTO:
        if args.peak_rps is None or args.peak_rps <= 0:
            raise _Failure("--lanes auto needs --peak-rps R (the load's peak, requests/s)")
        lanes = lanes_for(args.peak_rps)
        if limits.rpm is not None:
            lanes = max(1, min(lanes, limits.rpm // MIN_LANE_RPM))
        print(
            f"{lanes} lanes: one per {LANE_RPS} requests/s of a {args.peak_rps:g} requests/s peak"
            + (f", at most one per {MIN_LANE_RPM} of the rpm" if limits.rpm is not None else ""),
            file=sys.stderr,
        )
    else:
        lanes = args.lanes if args.lanes is not None else before.lanes if before is not None else 1
    if lanes > 1 and limits.rpm is not None and limits.rpm // lanes < MIN_LANE_RPM:
        raise _Failure(
            f"{lanes} lanes would give each lane {limits.rpm // lanes} of the {limits.rpm} rpm; a lane "
            f"needs at least {MIN_LANE_RPM}: use at most {max(1, limits.rpm // MIN_LANE_RPM)} lanes"
        )
    if lanes > 1 and limits.rpm is not None and limits.rpm % lanes:
        print(
            f"note: {lanes} lanes of {limits.rpm // lanes} requests admit {limits.rpm // lanes * lanes} "
            f"of the {limits.rpm} rpm (each lane's share is rounded down)",
            file=sys.stderr,
        )
    if lanes > 1 and limits.tpm is not None and limits.tpm // lanes < _TPM_LANE_WARN:
        print(
            f"warning: each of the {lanes} lanes holds {limits.tpm // lanes} of the {limits.tpm} tpm; "
            "a request that may use more tokens than that is refused (429 request_too_large)",
            file=sys.stderr,
        )
    return lanes


def _limits_json(limits: Limits) -> dict[str, Any]:
    return {
        "budget_usd": str(limits.budget_usd) if limits.budget_usd is not None else None,
        "period": limits.period.value if limits.budget_usd is not None else None,
        "rpm": limits.rpm,
        "tpm": limits.tpm,
        "lanes": limits.lanes if limits.lanes > 1 else None,
    }


def cmd_budgets_show(args: argparse.Namespace) -> int:
    scope, ident = args.target
    limits = _keys().get(ident).limits if scope is Scope.KEY else _limit_store().get(scope, ident)
    if limits is None:
        raise _Failure(f"no limits are set on {scope.value}:{ident} (see 'switchboard budgets list')")
    use = _use(scope, ident, limits)
    data = {"scope": scope.value, "id": ident, **_limits_json(limits), "use": use}
    _emit(args, data, f"{scope.value}:{ident}: {_limits_text(data)}" + ("\n" + _use_text(use) if use else ""))
    return 0


def cmd_budgets_list(args: argparse.Namespace) -> int:
    defined = _limit_store().all()
    rows = [
        {"scope": scope.value, "id": ident, **_limits_json(limits)}
        for (scope, ident), limits in sorted(defined.items())
    ]
    text = "\n".join(f"{r['scope']}:{r['id']}: {_limits_text(r)}" for r in rows)
    _emit(args, rows, text or "no team, user or model limits (a key's own are on the key)")
    return 0


def cmd_budgets_clear(args: argparse.Namespace) -> int:
    scope, ident = args.target
    if scope is Scope.KEY:
        raise _Failure("a key's limits are cleared with 'switchboard keys update ID --no-budget ...'")
    if not _limit_store().delete(scope, ident):
        raise _Failure(f"no limits are set on {scope.value}:{ident}")
    _emit(args, {"scope": scope.value, "id": ident, "cleared": True}, f"cleared {scope.value}:{ident}")
    return 0


def cmd_budgets_sweep(args: argparse.Namespace) -> int:
    from switchboard.limits.ledger import Ledger
    from switchboard.limits.sweeper import summarize

    swept = Ledger(_table()).sweep()  # what the scheduled SweeperFunction runs every 5 minutes
    data = summarize(swept)
    data["requests"] = [h.request_id for h in swept.refunded] + [h.request_id for h, _ in swept.settled]
    _emit(
        args,
        data,
        f"refunded {data['refunded']} orphaned reservations (${data['usd']}); "
        f"settled {data['settled']} at their recorded cost (${data['settled_usd']}); "
        f"returned {data['leases_returned']} unused leases",
    )
    return 0


# ---------------------------------------------------------------------------------- parser


def _run(func: Any) -> Any:
    """Turn the expected failures into one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        from switchboard.limits.keys import KeyRevoked, UnknownKey

        try:
            return int(func(args))
        except (_Failure, UnknownKey, KeyRevoked, ValueError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            print(f"switchboard: {message}", file=sys.stderr)
            return 1

    return run


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-usd", type=_money, metavar="X", help="budget in USD per period")
    parser.add_argument(
        "--period", choices=[p.value for p in Period], help="budget period in UTC (default: month)"
    )
    parser.add_argument("--rpm", type=_count, metavar="N", help="requests per minute")
    parser.add_argument("--tpm", type=_count, metavar="N", help="tokens per minute (prompt + output)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _key_flags(parser: argparse.ArgumentParser, create: bool) -> None:
    parser.add_argument("--name", required=create, help="a label for people")
    parser.add_argument("--team", help="team (team budgets apply)" + ("" if create else "; '' clears it"))
    parser.add_argument("--user", help="user (user budgets apply)" + ("" if create else "; '' clears it"))
    parser.add_argument("--tags", type=_csv, metavar="a,b", help="comma-separated tags")
    parser.add_argument("--models", type=_csv, metavar="a,b|*", help="allowed model aliases (default: *)")
    parser.add_argument(
        "--overrides",
        type=_csv,
        metavar="a,b|*|none",
        help="per-request routing overrides the key may use: models, provider, provider.<field> "
        "(default: none)",
    )
    parser.add_argument("--expires", type=_when, metavar="ISO", help="expiry time, UTC unless it says")
    _limit_flags(parser)
    _lane_flags(parser, "the key's budget and rpm/tpm, for a key busier than one item takes")


def _lane_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--lanes",
        type=_lanes,
        metavar="N|auto",
        help=f"split {what} into N items, one per {LANE_RPS} requests/s of peak load; auto: from "
        "--peak-rps (docs/limits.md, 'At scale')",
    )
    parser.add_argument(
        "--peak-rps", type=float, metavar="R", help="with --lanes auto: the peak load in requests/s"
    )


def register(commands: Any) -> None:
    """Add ``keys`` and ``budgets`` to the CLI's subcommands."""
    keys = commands.add_parser("keys", help="virtual keys in DynamoDB").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print its secret once")
    _key_flags(create, create=True)
    create.set_defaults(func=_run(cmd_keys_create))
    listing = keys.add_parser("list", help="list keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_run(cmd_keys_list))
    for name, func, helptext in (
        ("show", cmd_keys_show, "a key and its current use"),
        ("revoke", cmd_keys_revoke, "revoke a key (takes effect within the cache age)"),
    ):
        sub = keys.add_parser(name, help=helptext)
        sub.add_argument("id", help="key id (key_...)")
        sub.add_argument("--json", action="store_true")
        sub.set_defaults(func=_run(func))
    update = keys.add_parser("update", help="change a key's attributes or limits")
    update.add_argument("id", help="key id (key_...)")
    _key_flags(update, create=False)
    for flag in ("budget", "rpm", "tpm", "expiry"):
        update.add_argument(f"--no-{flag}", action="store_true", help=f"remove the {flag}")
    update.set_defaults(func=_run(cmd_keys_update))
    rotate = keys.add_parser("rotate", help="a new secret for the same key id")
    rotate.add_argument("id", help="key id (key_...)")
    rotate.add_argument("--grace-s", type=int, default=0, metavar="S", help="old secret valid S more seconds")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=_run(cmd_keys_rotate))

    budgets = commands.add_parser("budgets", help="team, user and model limits; the sweeper").add_subparsers(
        dest="budgets_command", required=True
    )
    setter = budgets.add_parser("set", help="set limits on team:T, user:U or model:ALIAS")
    setter.add_argument("target", type=_scoped, metavar="SCOPE:ID")
    _limit_flags(setter)
    _lane_flags(setter, "the budget and the rpm/tpm")
    setter.set_defaults(func=_run(cmd_budgets_set))
    show = budgets.add_parser("show", help="limits and current use of SCOPE:ID (key:key_... too)")
    show.add_argument("target", type=_scoped, metavar="SCOPE:ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_run(cmd_budgets_show))
    listing = budgets.add_parser("list", help="every team, user and model limit")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_run(cmd_budgets_list))
    clear = budgets.add_parser("clear", help="remove the limits of SCOPE:ID")
    clear.add_argument("target", type=_scoped, metavar="SCOPE:ID")
    clear.add_argument("--json", action="store_true")
    clear.set_defaults(func=_run(cmd_budgets_clear))
    sweep = budgets.add_parser(
        "sweep",
        help="close expired reservations: settle recorded costs, refund the rest (their request died)",
    )
    sweep.add_argument("--json", action="store_true")
    sweep.set_defaults(func=_run(cmd_budgets_sweep))
