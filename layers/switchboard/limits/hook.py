"""``LimitsHook``: budgets and rate limits around every routed request (a lifecycle ``Hook``):
chat, Anthropic messages and embeddings (which reserve no output tokens).

``admit`` finds the limits that apply (the key's own, its team's, its user's, the model alias's),
estimates the request's maximum cost and tokens, and reserves them on every line in one DynamoDB
transaction; it refuses with 402 (a budget) or 429 (a rate). ``settle`` moves the reservation to
the actual cost (``ex.cost_usd``, as the pipeline metered it), refunds it in full when every target
failed, and is a no-op the second time. A request with no limit costs no DynamoDB call at all.

A model with no price: a request under a budget is refused (402, ``price_unknown``) rather than
counted as free; without a budget the price is not needed (tokens are counted for tpm).
A response without usage (a stream whose client did not ask for ``include_usage``) is charged its
reservation, the upper bound, and logged.

Faults: an admission that DynamoDB refuses for contention after the retries (conflicts, throttling)
is answered 503 ``limits_busy``; one that gets no answer within the request's deadline (and
``admit_timeout_s``) 503 ``limits_unavailable``, both with ``Retry-After``. With ``fail_open`` the
latter is admitted instead and booked once DynamoDB answers again (a late, unconditional
reservation, then the ordinary settlement). Settlement never fails a response: what does not commit
at once is finished in the background (``switchboard.limits.settlement``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from switchboard.core.errors import GatewayError, PaymentRequired, RateLimited, ServiceUnavailable
from switchboard.core.money import Price, estimate_prompt_tokens
from switchboard.core.principal import Limits, Principal, Scope
from switchboard.exchange import BOOKED, Exchange
from switchboard.limits.definitions import LimitCache, ScopedLimits
from switchboard.limits.ledger import BudgetLine, Ledger, LedgerBusy, RateLine, Refusal, Reservation
from switchboard.limits.model import (
    estimate_usd,
    ledger_usd,
    output_bound,
    rate_window,
    reset_text,
    retry_after_s,
)
from switchboard.limits.settlement import Charge, Settler
from switchboard.routing.document import RoutingDocument
from switchboard.routing.pricing import PriceBook
from switchboard.routing.store import RoutingStore

__all__ = [
    "OPEN",
    "STATE",
    "Books",
    "BudgetExceeded",
    "LimitsBusy",
    "LimitsHook",
    "LimitsUnavailable",
    "budget_lines",
    "late_booking",
    "scope_lines",
]

log = logging.getLogger("switchboard.limits")

STATE = "limits"  # the hook's entry in Exchange.state: the Reservation
OPEN = "limits.open"  # admitted without a reservation (fail-open): the Reservation to book late
# A reservation outlives its request's deadline by this much before the sweeper may refund it.
_SWEEP_GRACE_S = 60
# An admission gives up this long before the request's deadline, to leave time to answer.
_ANSWER_MARGIN_S = 0.1


class Books(Protocol):
    """Writes that ride on the settlement transaction (``SpendLedger.transact_item``)."""

    def transact_item(self, ex: Exchange) -> dict[str, Any] | None: ...


# Budget use read for routing rules is reused for this long (per container).
USE_MAX_AGE_S = 5.0


class LimitsBusy(ServiceUnavailable):
    """503: DynamoDB refused the admission for contention after the retries; try again shortly."""

    code = "limits_busy"


class LimitsUnavailable(ServiceUnavailable):
    """503: the limits could not be checked (DynamoDB did not answer in time); fail-closed."""

    code = "limits_unavailable"


class BudgetExceeded(PaymentRequired):
    """402, naming the budget, its limit, its use and when it resets (also in ``error.budget``)."""

    def __init__(self, message: str, budget: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.budget = budget

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["budget"] = self.budget
        return body


def _usd(value: Decimal) -> str:
    """Dollars for a message: cents, or more digits when the amount is below a cent."""
    if value != 0 and abs(value) < Decimal("0.01"):
        return f"${value.normalize():f}"
    return f"${value.quantize(Decimal('0.01')):,}"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


_ANSWERED = frozenset({"ok", "interrupted"})


def budget_lines(
    principal: Principal, alias: str, defs: ScopedLimits, now: float
) -> tuple[list[BudgetLine], list[RateLine]]:
    """Every budget and rate limit that applies to ``principal`` calling ``alias`` at ``now``."""
    scoped: list[tuple[Scope, str, str, Limits]] = []
    if principal.limits is not None:
        scoped.append(
            (Scope.KEY, principal.key_id, f"key '{principal.name}' ({principal.key_id})", principal.limits)
        )
    for scope, ident in ((Scope.TEAM, principal.team), (Scope.USER, principal.user), (Scope.MODEL, alias)):
        if ident and (limits := defs.get((scope, ident))) is not None:
            scoped.append((scope, ident, f"{scope.value} '{ident}'", limits))
    return scope_lines(scoped, now)


def scope_lines(
    scoped: list[tuple[Scope, str, str, Limits]], now: float
) -> tuple[list[BudgetLine], list[RateLine]]:
    """The budget and rate lines of (scope, id, label, limits) entries at ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    window, _ = rate_window(now)
    budgets, rates = [], []
    for scope, ident, label, limits in scoped:
        if limits.budget_usd is not None:
            period = limits.period
            budgets.append(
                BudgetLine(
                    scope,
                    ident,
                    label,
                    limits.budget_usd,
                    period,
                    period.period_id(moment),
                    period.resets_at(moment),
                    lanes=max(1, limits.lanes),
                )
            )
        if limits.rated:
            rates.append(
                RateLine(scope, ident, label, limits.rpm, limits.tpm, window, lanes=max(1, limits.lanes))
            )
    return budgets, rates


def late_booking(res: Reservation) -> Reservation:
    """The reservation a fail-open request is booked under once DynamoDB answers: ``res``'s lines
    and estimate under its own id, and none of the leases ``res``'s admission may have taken over
    (those are ``res``'s, refunded with it when its admission is released)."""
    return dataclasses.replace(res, request_id=f"{res.request_id}.late", leases={})


class LimitsHook:
    """Budgets and rate limits, global across instances through the ledger's transactions."""

    def __init__(
        self,
        ledger: Ledger,
        definitions: LimitCache,
        routing: RoutingStore,
        *,
        max_request_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        prices: PriceBook | None = None,
        books: Books | None = None,
        fail_open: bool = False,
        admit_timeout_s: float = 3.0,
        settler: Settler | None = None,
        buffered: bool = False,
    ) -> None:
        self.ledger = ledger
        # ``buffered``: nothing runs after the response (Mangum), so a failed settlement is
        # recorded for the sweeper before it (see switchboard.limits.settlement).
        self.settler = settler or Settler(ledger, record_inline=buffered)
        # When DynamoDB does not answer: refuse (False, the default: no unmetered spend) or serve.
        self.fail_open = fail_open
        self.admit_timeout_s = admit_timeout_s
        # More writes for the settlement transaction (the spend ledger's, which then skips the request).
        self.books = books
        self.definitions = definitions
        self.routing = routing
        self.max_request_s = max_request_s
        self.clock = clock  # wall time: periods, windows, reservation deadlines
        # The one price lookup (the routing document's prices over the built-in table), the
        # gateway's, which metering prices the answer with.
        self.prices = prices or PriceBook()
        self.use_max_age_s = USE_MAX_AGE_S
        self._monotonic = monotonic
        self._use: dict[tuple[str, str], tuple[dict[str, Any] | None, float]] = {}

    # ------------------------------------------------------------------------- admission

    async def admit(self, ex: Exchange) -> None:
        now = self.clock()
        give_up = self._give_up_at(ex)
        try:
            definitions = await asyncio.wait_for(self.definitions.current(), self._left(give_up))
        except Exception as exc:
            if self.fail_open:  # no definitions: only the key's own limits are known, booked late
                definitions = {}
            else:
                raise self._unavailable(exc, "the limit definitions") from None
        budgets, rates = budget_lines(ex.principal, ex.alias, definitions, now)
        if not budgets and not rates:
            return
        document = (await self.routing.current()).document
        res = self._estimate(ex, document, budgets, rates, now)
        self._refuse_impossible(res, now)
        # The transaction returns no values, so the rate-limit headers come from a read made beside it
        # (same latency, one more call, only when a rate limit applies).
        reading = asyncio.ensure_future(self._read_rates(res)) if res.rates else None
        call = asyncio.ensure_future(asyncio.to_thread(self.ledger.reserve, res))
        try:
            refusal = await asyncio.wait_for(asyncio.shield(call), self._left(give_up))
        except BaseException as exc:
            if reading is not None:
                reading.cancel()
            if isinstance(exc, LedgerBusy):  # nothing was written
                raise LimitsBusy(
                    "The gateway's limits store is busy (DynamoDB refused the admission for "
                    f"{'throttling' if exc.throttled else 'write conflicts'}). Retry shortly.",
                    headers={"retry-after": "2" if exc.throttled else "1"},
                ) from None
            # No answer (or the client left): the call may still commit. Give back whatever it
            # writes, once it ends.
            self.settler.release(res, after=call)  # its hold once the call ends: the lanes it chose
            if not isinstance(exc, Exception):
                raise  # cancelled: the client left
            if not self.fail_open:
                raise self._unavailable(exc, "the limits store") from None
            log.warning("limits store unavailable; admitting %s unmetered (fail-open)", ex.request_id)
            # Booked later under its own reservation: the one above may yet be written, and released.
            ex.state[OPEN] = late_booking(res)
            return
        snapshot = await self._snapshot(reading, give_up)
        if refusal is not None:
            raise self._refusal_error(refusal, res, self.clock())
        ex.state[STATE] = res
        ex.headers.update(self._success_headers(res, snapshot, now))

    def _give_up_at(self, ex: Exchange) -> float:
        """When an admission stops waiting for DynamoDB (monotonic): ``admit_timeout_s`` from now,
        or earlier to answer within the request's deadline (both on ``time.monotonic``, as
        ``Exchange.deadline`` is)."""
        give_up = time.monotonic() + self.admit_timeout_s
        if ex.deadline is not None:
            give_up = min(give_up, ex.deadline - _ANSWER_MARGIN_S)
        return give_up

    def _left(self, give_up: float) -> float:
        return max(0.01, give_up - time.monotonic())

    async def _snapshot(
        self, reading: asyncio.Future[dict[tuple[str, str], dict[str, Any]]] | None, give_up: float
    ) -> dict[tuple[str, str], dict[str, Any]]:
        if reading is None:
            return {}
        try:
            return await asyncio.wait_for(reading, self._left(give_up))
        except TimeoutError:  # headers only: never wait past the deadline for them
            return {}

    def _unavailable(self, exc: BaseException, what: str) -> LimitsUnavailable:
        failure = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("limits unavailable (%s: %s); refusing (fail-closed)", what, failure)
        return LimitsUnavailable(
            "The gateway could not check this key's budget and rate limits: its limits store did "
            "not answer. Retry shortly.",
            headers={"retry-after": "2"},
        )

    def _estimate(
        self,
        ex: Exchange,
        document: RoutingDocument,
        budgets: list[BudgetLine],
        rates: list[RateLine],
        now: float,
    ) -> Reservation:
        chat = ex.chat
        matches = {t.label: self.prices.lookup(document, t) for t in ex.plan.targets}
        prices = {label: m.price if m is not None else None for label, m in matches.items()}
        prompt = estimate_prompt_tokens(chat)
        choices = chat.n or 1

        def output(price: Price | None) -> int:  # embeddings produce no output tokens
            return 0 if ex.kind == "embeddings" else output_bound(chat.output_cap, price, choices)

        tokens = prompt + max(output(p) for p in prices.values())
        usd = Decimal(0)
        if budgets:
            missing = sorted(label for label, price in prices.items() if price is None)
            if missing:
                raise PaymentRequired(
                    f"The model '{ex.alias}' is under a budget ({budgets[0].label}) but neither the "
                    f"routing document nor the built-in table has a price for {', '.join(missing)}; "
                    "the gateway will not count it as free. Add it to 'prices'.",
                    code="price_unknown",
                )
            # Fallback may serve any target: hold the dearest.
            usd = max(estimate_usd(p, prompt, output(p)) for p in prices.values() if p is not None)
        return Reservation(
            request_id=ex.request_id,
            usd=usd,
            tokens=tokens,
            budgets=tuple(budgets),
            rates=tuple(rates),
            expires_at=int(now + self._lifetime(ex) + _SWEEP_GRACE_S),
            key_id=ex.principal.key_id,
            alias=ex.alias,
        )

    def _lifetime(self, ex: Exchange) -> float:
        """Seconds the request may still run: to its deadline (the client's timeout, capped by the
        function's), else ``max_request_s``. The reservation expires that long plus the sweeper's
        grace from now, so a request killed with its instance is refunded by the next sweep."""
        if ex.deadline is None:
            return self.max_request_s
        return max(0.0, min(self.max_request_s, ex.deadline - time.monotonic()))

    def _refuse_impossible(self, res: Reservation, now: float) -> None:
        """Refuse without a DynamoDB call what no empty budget or window could ever admit."""
        for line in res.budgets:
            if res.usd > line.share:
                raise self._budget_error(line, res, None, now)
        for rate in res.rates:
            if rate.tpm_share is not None and res.tokens > rate.tpm_share:
                lanes = (
                    f", {rate.tpm_share} in each of its {rate.lanes} lanes (one lane counts a request)"
                    if rate.lanes > 1
                    else ""
                )
                raise RateLimited(
                    f"Request too large for {rate.label}: it may use up to {res.tokens} tokens "
                    f"(prompt bound plus max_tokens) and the limit is {rate.tpm} tokens per minute"
                    f"{lanes}. Lower max_tokens or shorten the prompt.",
                    code="request_too_large",
                    # No window will ever admit it: the SDKs, which retry a 429, must not.
                    headers={**_rate_headers(rate, None, None, res.tokens, now), "x-should-retry": "false"},
                )

    async def _read_rates(self, res: Reservation) -> dict[tuple[str, str], dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.ledger.read, [line.key for line in res.rates])
        except Exception:  # headers only: a failed read never fails an admitted request
            log.warning("ledger read for rate-limit headers failed", exc_info=True)
            return {}

    # ---------------------------------------------------------------------------- errors

    def _refusal_error(self, refusal: Refusal, res: Reservation, now: float) -> Exception:
        if refusal.budget is not None:
            used = Decimal(refusal.item.get("used", 0))
            return self._budget_error(refusal.budget, res, used, now)
        rate = refusal.rate
        assert rate is not None
        req = int(refusal.item.get("req", 0))
        tok = int(refusal.item.get("tok", 0))
        wait = rate.resets_in(now)
        # In lanes the item is every lane's count summed, and a lane is full at its share.
        if rate.rpm_share is not None and req >= rate.rpm_share * rate.lanes:
            what = f"requests per min (RPM): Limit {rate.rpm}, Used {req}, Requested 1"
        else:
            what = f"tokens per min (TPM): Limit {rate.tpm}, Used {tok}, Requested {res.tokens}"
        headers = _rate_headers(rate, req, tok, res.tokens, now)
        headers["retry-after"] = str(retry_after_s(wait))
        return RateLimited(
            f"Rate limit reached for {rate.label} on {what}. Please try again in {reset_text(wait)}.",
            headers=headers,
        )

    def _budget_error(
        self, line: BudgetLine, res: Reservation, used: Decimal | None, now: float
    ) -> BudgetExceeded:
        resets = _iso(line.resets_at)
        when = f"It resets at {resets}." if resets else "It is a total budget and never resets."
        if used is None and line.lanes > 1:
            what = (
                f"this request may cost up to {_usd(res.usd)}, more than one of the budget's "
                f"{line.lanes} lanes holds ({_usd(line.share)}); lower max_tokens, or the budget's lanes"
            )
        elif used is None:
            what = f"this request may cost up to {_usd(res.usd)}, more than the whole budget"
        else:
            left = max(Decimal(0), line.limit - used)
            what = f"{_usd(left)} is left and this request may cost up to {_usd(res.usd)}"
        period = "total" if line.period_id == "total" else f"{line.period.value} ({line.period_id})"
        details = {
            "scope": line.scope.value,
            "id": line.ident,
            "period": line.period.value,
            "period_id": line.period_id,
            "limit_usd": str(line.limit),
            "used_usd": str(used) if used is not None else None,
            "request_max_usd": str(res.usd),
            "resets_at": resets,
        }
        headers = {"x-switchboard-budget": f"{line.scope.value}:{line.ident}"}
        if line.resets_at is not None:
            headers["retry-after"] = str(retry_after_s(line.resets_at.timestamp() - now))
        return BudgetExceeded(
            f"Budget exceeded: the {period} budget of {line.label} is {_usd(line.limit)}; {what}. {when}",
            details,
            headers=headers,
        )

    # --------------------------------------------------------------------------- headers

    def _success_headers(
        self, res: Reservation, snapshot: Mapping[tuple[str, str], dict[str, Any]], now: float
    ) -> dict[str, str]:
        """OpenAI's x-ratelimit-* for the tightest rate line, from the read made beside the admission.

        The read and the write race; the item's ``last_req`` says whether the read saw this
        request. Exact when requests on the line do not overlap; under load ``remaining`` may be
        off by the requests admitted at the same moment. A line in lanes reads one lane (lanes
        are drawn at random, so any is a sample of the window) and scales it by the lanes: an
        estimate, within a few requests of a lane's share times the lanes.
        """
        best_req: tuple[int, RateLine, int] | None = None
        best_tok: tuple[int, RateLine, int] | None = None
        for line in res.rates:
            seen = snapshot.get((line.key["pk"]["S"], line.key["sk"]["S"]), {})
            missed = seen.get("last_req") != res.request_id
            req = int(seen.get("req", 0)) * line.lanes + missed
            tok = int(seen.get("tok", 0)) * line.lanes + (res.tokens if missed else 0)
            rpm = None if line.rpm_share is None else line.rpm_share * line.lanes
            tpm = None if line.tpm_share is None else line.tpm_share * line.lanes
            if rpm is not None and (best_req is None or rpm - req < best_req[0]):
                best_req = (rpm - req, line, req)
            if tpm is not None and (best_tok is None or tpm - tok < best_tok[0]):
                best_tok = (tpm - tok, line, tok)
        headers: dict[str, str] = {}
        if best_req is not None:
            remaining, line, _ = best_req
            headers["x-ratelimit-limit-requests"] = str(line.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, remaining))
            headers["x-ratelimit-reset-requests"] = reset_text(line.resets_in(now))
        if best_tok is not None:
            remaining, line, _ = best_tok
            headers["x-ratelimit-limit-tokens"] = str(line.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, remaining))
            headers["x-ratelimit-reset-tokens"] = reset_text(line.resets_in(now))
        return headers

    # ------------------------------------------------------------------------ settlement

    async def settle(self, ex: Exchange) -> None:
        """Charge the request's actual cost, exactly once. One try on the response path (bounded);
        anything else continues in the background (``Settler``), which books the spend-ledger item
        with the settlement, so it is marked booked as soon as the settlement is handed over."""
        res: Reservation | None = ex.state.get(STATE)
        late: Reservation | None = ex.state.get(OPEN)
        if res is None and late is None:
            return
        usd, tokens = self.actual(ex, res or late)  # type: ignore[arg-type]
        item = self.books.transact_item(ex) if self.books is not None else None
        also = (item,) if item is not None else ()
        if late is not None:  # admitted unmetered (fail-open): book it once DynamoDB answers
            ex.state.pop(OPEN)
            if ex.outcome in _ANSWERED:
                self.settler.defer(Charge(late.hold, usd, tokens, also, reserve=late))
                if also:
                    ex.state[BOOKED] = True
            return
        assert res is not None
        done = await self.settler.settle(Charge(res.hold, usd, tokens, also, refill=res))
        if done is not False and also:  # settled now, or handed over with it (None)
            ex.state[BOOKED] = True

    async def drain(self, timeout_s: float = 5.0) -> None:
        """At shutdown: finish (or record) the settlements still running in the background, then
        give back this instance's leases (those not given back in time are the sweeper's)."""
        await self.settler.drain(timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(self.ledger.return_leases), timeout_s)

    def actual(self, ex: Exchange, res: Reservation) -> tuple[Decimal, int]:
        """What the request really cost: nothing unless a target answered (``ok``, or a stream that
        broke or lost its client after output began), else the cost the metering step put on the
        exchange (``ex.cost_usd``: its usage at the price in force), so that the budget, the spend
        ledger and the cost event agree to the digit.

        No usage, or no cost (no price: admitted only without a budget), is charged the
        reservation, the upper bound, where a budget applies.
        """
        if ex.outcome not in _ANSWERED:  # error, rejected (another hook refused), pending
            return Decimal(0), 0
        usage = ex.usage
        if usage is None:
            log.info("request %s has no usage (%s); charging its reservation", ex.request_id, ex.outcome)
            return res.usd, res.tokens
        tokens = max(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)
        if ex.cost_usd is None:
            return (res.usd, tokens) if res.budgets else (Decimal(0), tokens)
        return ledger_usd(ex.cost_usd), tokens

    # ------------------------------------------------------------ read-only check (explain)

    async def check(self, ex: Exchange) -> dict[str, Any]:
        """What ``admit`` would decide for ``ex`` now, read-only: the same lines and estimate,
        compared with the ledger's current values; nothing is reserved or written. ``allowed``
        is None when the limits could not be read. Concurrent requests may change the answer."""
        now = self.clock()
        try:
            definitions = await asyncio.wait_for(self.definitions.current(), self.admit_timeout_s)
        except Exception:
            return {
                "allowed": None,
                "reserved": False,
                "checks": [],
                "error": "limit definitions unavailable",
            }
        budgets, rates = budget_lines(ex.principal, ex.alias, definitions, now)
        if not budgets and not rates:
            return {"allowed": True, "reserved": False, "checks": []}
        document = (await self.routing.current()).document
        try:
            res = self._estimate(ex, document, budgets, rates, now)
            self._refuse_impossible(res, now)
        except GatewayError as exc:
            return {"allowed": False, "reserved": False, "checks": [], "error": exc.body()["error"]}
        # Every lane of each line.
        keys = [key for b in res.budgets for key in b.keys] + [key for r in res.rates for key in r.keys]
        try:
            items = await asyncio.wait_for(asyncio.to_thread(self.ledger.read, keys), self.admit_timeout_s)
        except Exception:
            return {"allowed": None, "reserved": False, "checks": [], "error": "limits store unavailable"}
        checks = [_budget_check(line, res, items) for line in res.budgets]
        checks += [_rate_check(line, res, items) for line in res.rates]
        return {"allowed": all(c["admits"] for c in checks), "reserved": False, "checks": checks}

    # ------------------------------------------------------------------- budget use (rules)

    async def budget_used(self, principal: Principal, alias: str, scope: Scope) -> float | None:
        """The fraction of ``scope``'s budget used (spent + reserved), or None when it has none."""
        budgets, _ = budget_lines(principal, alias, await self.definitions.current(), self.clock())
        line = next((b for b in budgets if b.scope is scope), None)
        if line is None or line.limit <= 0:
            return None if line is None else 1.0
        key = (line.key["pk"]["S"], line.key["sk"]["S"])
        cached = self._use.get(key)
        if cached is None or self._monotonic() - cached[1] >= self.use_max_age_s:
            try:
                read = asyncio.to_thread(self.ledger.used, line)  # its lanes summed
                found = await asyncio.wait_for(read, self.admit_timeout_s)
            except Exception:  # a rule that cannot read its budget does not fire; admission still counts
                log.warning("budget use unreadable for routing rules", exc_info=True)
                return None
            self._use[key] = (dict(found), self._monotonic())
            cached = self._use[key]
        used = Decimal((cached[0] or {}).get("used", 0))
        return float(used / line.limit)


def _item(items: Mapping[tuple[str, str], dict[str, Any]], key: dict[str, Any]) -> dict[str, Any]:
    return items.get((key["pk"]["S"], key["sk"]["S"]), {})


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _budget_check(
    line: BudgetLine, res: Reservation, items: Mapping[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    lanes = [_item(items, key) for key in line.keys]
    used = Decimal(BudgetLine.summed(lanes)["used"])
    return {
        "kind": "budget",
        "scope": line.scope.value,
        "id": line.ident,
        "period_id": line.period_id,
        "limit_usd": _plain(line.limit),
        "used_usd": _plain(used),
        "request_max_usd": _plain(res.usd),
        "admits": any(line.fits(lane, res) for lane in lanes),  # some lane has room
    }


def _rate_check(
    line: RateLine, res: Reservation, items: Mapping[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """The ledger's rate condition: fewer than ``rpm`` requests, and room for the tokens (in
    lanes: on some lane, with the lanes' counts summed)."""
    lanes = [_item(items, key) for key in line.keys]
    summed = RateLine.summed(lanes)
    req, tok = int(summed["req"]), int(summed["tok"])
    ok = any(line.fits(lane, res) for lane in lanes)
    return {
        "kind": "rate",
        "scope": line.scope.value,
        "id": line.ident,
        "rpm": line.rpm,
        "tpm": line.tpm,
        "requests_this_minute": req,
        "tokens_this_minute": tok,
        "request_tokens": res.tokens,
        "admits": ok,
    }


def _rate_headers(
    rate: RateLine, req: int | None, tok: int | None, requested: int, now: float
) -> dict[str, str]:
    reset = reset_text(rate.resets_in(now))
    headers: dict[str, str] = {}
    if rate.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(rate.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, rate.rpm - (req or 0)))
        headers["x-ratelimit-reset-requests"] = reset
    if rate.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(rate.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, rate.tpm - (tok or 0)))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers
