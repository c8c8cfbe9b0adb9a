"""Property tests of the reservation arithmetic, the estimates and the periods (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.core.money import Price, cost_usd
from switchboard.core.principal import Period
from switchboard.core.schemas import Usage
from switchboard.limits.model import (
    DEFAULT_OUTPUT_TOKENS,
    LEDGER_QUANTUM,
    admits,
    estimate_usd,
    ledger_usd,
    output_bound,
    rate_window,
    reserve_usd,
    reset_text,
    settle_amounts,
)

money = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
rate = st.decimals(min_value=0, max_value=200, places=3, allow_nan=False, allow_infinity=False)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(used=money, estimate=money, limit=money)
def test_the_condition_is_used_plus_estimate_within_the_limit(
    used: Decimal, estimate: Decimal, limit: Decimal
) -> None:
    assert admits(used, estimate, limit) == (used + estimate <= limit)


@given(reserved=money, actual=money, spent=money, other=money)
def test_settling_keeps_used_equal_to_spent_plus_reserved(
    reserved: Decimal, actual: Decimal, spent: Decimal, other: Decimal
) -> None:
    # A ledger with this reservation and another one outstanding, then this one settles.
    ledger_reserved, ledger_spent = reserved + other, spent
    used = ledger_spent + ledger_reserved
    d_used, d_reserved, d_spent = settle_amounts(reserved, actual)
    used, ledger_reserved, ledger_spent = used + d_used, ledger_reserved + d_reserved, ledger_spent + d_spent
    assert used == ledger_spent + ledger_reserved
    assert ledger_reserved == other and ledger_spent == spent + actual


# An in-memory ledger with exactly the DynamoDB expressions: reservations arrive and settle in any
# interleaving, each at an actual cost no larger than its estimate.
operations = st.lists(
    st.tuples(st.booleans(), st.integers(0, 1_000_000), st.integers(0, 1_000_000)), min_size=1, max_size=60
)


@settings(max_examples=300)
@given(limit=st.integers(0, 5_000_000), ops=operations)
def test_any_interleaving_never_spends_over_the_limit(limit: int, ops: list[tuple[bool, int, int]]) -> None:
    q = LEDGER_QUANTUM * 1000
    budget = limit * q
    used = reserved = spent = Decimal(0)
    pending: list[tuple[Decimal, Decimal]] = []
    settled_total = Decimal(0)
    for arrive, a, b in ops:
        if arrive or not pending:
            estimate, actual = max(a, b) * q, min(a, b) * q
            if admits(used, estimate, budget):  # ConditionExpression: used <= limit - estimate
                used, reserved = used + estimate, reserved + estimate  # ADD used :e, reserved :e
                pending.append((estimate, actual))
        else:
            estimate, actual = pending.pop(a % len(pending))
            d_used, d_reserved, d_spent = settle_amounts(estimate, actual)
            used, reserved, spent = used + d_used, reserved + d_reserved, spent + d_spent
            settled_total += actual
        assert used == spent + reserved
        assert used <= budget and spent <= budget
    for estimate, _actual in pending:  # the rest fail: refunds
        d_used, d_reserved, d_spent = settle_amounts(estimate, Decimal(0))
        used, reserved, spent = used + d_used, reserved + d_reserved, spent + d_spent
    assert reserved == 0 and used == spent == settled_total


prices = st.builds(
    Price,
    input_per_mtok=rate,
    output_per_mtok=rate,
    cached_input_per_mtok=st.none() | rate,
    cache_write_per_mtok=st.none() | rate,
    max_output_tokens=st.none() | st.integers(1, 200_000),
)


@settings(max_examples=300)
@given(
    price=prices,
    prompt=st.integers(0, 500_000),
    cached=st.integers(0, 500_000),
    writes=st.integers(0, 500_000),
    requested=st.none() | st.integers(1, 100_000),
    choices=st.integers(1, 8),
    data=st.data(),
)
def test_the_estimate_bounds_any_usage_the_request_can_produce(
    price: Price,
    prompt: int,
    cached: int,
    writes: int,
    requested: int | None,
    choices: int,
    data: st.DataObject,
) -> None:
    out_bound = output_bound(requested, price, choices)
    completion = data.draw(st.integers(0, out_bound))
    cached, writes = min(cached, prompt), min(writes, prompt - min(cached, prompt))
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": cached, "cache_write_tokens": writes},
    )
    assert ledger_usd(cost_usd(price, usage)) <= estimate_usd(price, prompt, out_bound)


@given(
    requested=st.none() | st.integers(1, 10**6), cap=st.none() | st.integers(1, 10**6), n=st.integers(1, 16)
)
def test_output_bound_is_the_tighter_cap_times_the_choices(
    requested: int | None, cap: int | None, n: int
) -> None:
    price = Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1), max_output_tokens=cap)
    caps = [c for c in (requested, cap) if c]
    assert output_bound(requested, price, n) == (min(caps) if caps else DEFAULT_OUTPUT_TOKENS) * n


@given(values=st.lists(st.decimals(min_value=0, max_value=100, places=12), max_size=200))
def test_ledger_rounding_never_moves_the_sum_by_a_cent(values: list[Decimal]) -> None:
    exact = sum(values, Decimal(0))
    booked = sum((ledger_usd(v) for v in values), Decimal(0))
    assert abs(booked - exact) <= len(values) * LEDGER_QUANTUM / 2
    assert all(reserve_usd(v) >= v for v in values)


@given(now=moments, period=st.sampled_from([Period.DAY, Period.WEEK, Period.MONTH]))
def test_a_period_ends_where_the_next_id_begins(now: datetime, period: Period) -> None:
    ends = period.resets_at(now)
    assert ends is not None and ends > now
    assert period.period_id(ends - timedelta(microseconds=1)) == period.period_id(now)
    assert period.period_id(ends) != period.period_id(now)
    assert ends.hour == ends.minute == ends.second == 0 and ends.tzinfo is not None


def test_period_ids() -> None:
    moment = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)
    assert [p.period_id(moment) for p in Period] == ["2026-11-25", "2026-W48", "2026-11", "total"]
    assert Period.WEEK.resets_at(moment) == datetime(2026, 11, 30, tzinfo=UTC)  # Monday
    assert Period.MONTH.resets_at(datetime(2026, 12, 5, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert Period.TOTAL.resets_at(moment) is None


@given(now=st.floats(min_value=0, max_value=4e9))
def test_rate_windows(now: float) -> None:
    window, left = rate_window(now)
    assert 0 < left <= 60 and window * 60 <= now < (window + 1) * 60


def test_reset_text() -> None:
    assert [reset_text(s) for s in (0.25, 1, 12.2, 60, 65)] == ["250ms", "1s", "13s", "1m0s", "1m5s"]
