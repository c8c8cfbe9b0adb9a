"""The engine: run a plan with retries, fallback and streaming failover, inside one deadline.

For each target in the plan, in order: try it; on a failure whose class allows it, retry the same
target with jittered exponential backoff (or the upstream's ``Retry-After``); then fall back to
the next target if the route's ``fallback_on`` names the class. Every attempt is recorded.

Streaming: the engine pulls from the upstream until the first chunk that carries output. Until
then a failure is invisible to the client and the next target takes over. After that the stream
is committed; a later failure ends it with an OpenAI-format error event, never a silent cut.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import httpx

from switchboard.core.attempts import AttemptRecord
from switchboard.core.errors import (
    AllTargetsFailed,
    AttemptFailed,
    ErrorClass,
    GatewayError,
    UpstreamRejected,
)
from switchboard.core.redaction import scrub
from switchboard.core.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)
from switchboard.core.sse import encode_data, encode_json
from switchboard.routing.document import RetryPolicy
from switchboard.routing.planner import Plan, PlannedTarget
from switchboard.upstream import providers
from switchboard.upstream.providers.base import Call, EmbedCall, StreamChunk
from switchboard.upstream.secrets import SecretResolver, SecretUnavailable

__all__ = [
    "ChunkFilter",
    "Completion",
    "Embedded",
    "Engine",
    "HeldStream",
    "StreamResult",
    "check_modalities",
]

T = TypeVar("T")
X = TypeVar("X")

log = logging.getLogger("switchboard")


@dataclass(slots=True)
class Completion:
    completion: ChatCompletion
    raw: bytes | None
    target: PlannedTarget
    attempts: list[AttemptRecord]


class ChunkFilter(Protocol):
    """Sees every chunk of a committed stream (usage metering): may replace or drop it."""

    def chunk(self, item: StreamChunk) -> StreamChunk | None: ...

    def end(self) -> StreamChunk | None: ...


@dataclass(slots=True)
class Embedded:
    response: EmbeddingResponse
    raw: bytes | None
    target: PlannedTarget
    attempts: list[AttemptRecord]


@dataclass(slots=True)
class StreamResult:
    """A committed stream: the chunks already pulled, and the rest still to come."""

    target: PlannedTarget
    attempts: list[AttemptRecord]
    _held: list[StreamChunk]
    _rest: AsyncIterator[StreamChunk]
    _deadline: float
    first_token_at: float = 0.0
    usage: Usage | None = None
    completed: bool = False
    interrupted: AttemptFailed | None = field(default=None)
    meter: ChunkFilter | None = None

    def _filter(self, item: StreamChunk) -> StreamChunk | None:
        if item.chunk.usage is not None:
            self.usage = item.chunk.usage
        return self.meter.chunk(item) if self.meter is not None else item

    async def events(self) -> AsyncIterator[bytes]:
        """SSE bytes for the client: each chunk as it arrives, then ``[DONE]`` or an error event."""
        rest = self._rest
        try:
            # What was held until the commit goes out in one write: the role chunk and the first
            # content chunk reach the client together, one send instead of two (time to first byte).
            first = b"".join(_encode(out) for out in map(self._filter, self._held) if out is not None)
            self._held = []
            if first:
                yield first
            while True:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    item = await anext(rest)
                out = self._filter(item)
                if out is not None:
                    yield _encode(out)
        except StopAsyncIteration:
            self.completed = True
            tail = self.meter.end() if self.meter is not None else None
            if tail is not None:
                yield _encode(tail)
            yield b"data: [DONE]\n\n"
        except GatewayError:
            raise
        except Exception as exc:  # AttemptFailed, or any transport fault (``transport_failure``)
            failure = exc if isinstance(exc, AttemptFailed) else transport_failure(exc, self.target)
            self.interrupted = failure
            self.attempts.append(AttemptRecord(self.target.label, failure.error_class, failure.status, 0.0))
            yield encode_json(
                {
                    "error": {
                        "message": scrub(
                            f"The upstream stream from {self.target.provider_name} failed after output began "
                            f"({failure.error_class}); the response is incomplete."
                        ),
                        "type": "upstream_error",
                        "param": None,
                        "code": "stream_interrupted",
                    }
                }
            )
        finally:
            await rest.aclose()  # type: ignore[attr-defined]


@dataclass(slots=True)
class HeldStream(Generic[X]):
    """A committed stream of any wire format (``Engine.run_stream``): held items, then the rest.

    ``items`` raises ``AttemptFailed`` when the upstream fails after commit; the endpoint that
    owns the wire format ends its response with an error in that format.
    """

    target: PlannedTarget
    attempts: list[AttemptRecord]
    held: list[X]
    rest: AsyncIterator[X]
    deadline: float

    async def items(self) -> AsyncIterator[X]:
        try:
            for item in self.held:
                yield item
            self.held = []
            while True:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    item = await anext(self.rest)
                yield item
        except StopAsyncIteration:
            return
        except GatewayError:
            raise
        except Exception as exc:  # AttemptFailed, or any transport fault (``transport_failure``)
            failure = exc if isinstance(exc, AttemptFailed) else transport_failure(exc, self.target)
            self.attempts.append(AttemptRecord(self.target.label, failure.error_class, failure.status, 0.0))
            raise failure from None
        finally:
            await self.rest.aclose()  # type: ignore[attr-defined]


def _encode(item: StreamChunk) -> bytes:
    return encode_data(item.raw if item.raw is not None else item.chunk.model_dump_json().encode())


def transport_failure(exc: BaseException, target: PlannedTarget) -> AttemptFailed:
    """Class a failure below the provider's answer: timeouts are ``timeout``, everything else
    ``server``, so the attempt is in the trail and the plan falls back.

    Expected ones are httpx's errors, ``TimeoutError`` and ``OSError``. Anything else (an
    ``AssertionError``, a parser's or TLS layer's own error from some transport, a bug) is a
    failed attempt too, never a 500 that skips the fallback; it is logged with its traceback,
    because it should not happen."""
    if not isinstance(exc, (httpx.HTTPError, TimeoutError, OSError)):
        log.error("unexpected failure calling %s: %s", target.label, type(exc).__name__, exc_info=exc)
    if _timed_out(exc):
        return AttemptFailed(ErrorClass.TIMEOUT, f"{target.provider_name}: timed out")
    return AttemptFailed(
        ErrorClass.SERVER, f"{target.provider_name}: connection failed ({type(exc).__name__})"
    )


def _timed_out(exc: BaseException) -> bool:
    """A ``TimeoutError``, or an httpx timeout whose chained causes (h1 and httpcore chain every
    low-level one) show no other socket error: a reset some client reported as a timeout is not."""
    if isinstance(exc, TimeoutError):
        return True
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError):
            return isinstance(cause, TimeoutError)
        cause = cause.__cause__
    return True


def check_modalities(present: set[str], target: PlannedTarget) -> None:
    """A 400 before any upstream call when the route declares modalities the request exceeds."""
    if target.modalities is None or present <= target.modalities:
        return
    raise AttemptFailed(
        ErrorClass.CLIENT,
        f"{target.label} accepts {', '.join(sorted(target.modalities))} input only; "
        f"this request has {', '.join(sorted(present - target.modalities))} input",
        status=400,
        upstream_type="invalid_request_error",
        upstream_code="unsupported_modality",
        upstream_param="messages",
    )


class Engine:
    """Runs plans against providers. One per process; holds the shared HTTP client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        secrets: SecretResolver,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.http = http
        self._secrets = secrets
        self._sleep = sleep
        self._rand = rand

    async def complete(self, request: ChatCompletionRequest, plan: Plan, deadline: float) -> Completion:
        async def attempt(target: PlannedTarget, remaining: float) -> tuple[ChatCompletion, bytes | None]:
            # The credential lookup is inside the timeout: a slow SSM read must not outlive the deadline.
            async with asyncio.timeout(min(target.timeouts.total_s, remaining)):
                call = await self._call(request, target, stream=False)
                return await providers.get(target.provider.kind).complete(call)

        (completion, raw), target, records = await self._run(plan, deadline, attempt)
        return Completion(completion, raw, target, records)

    async def stream(self, request: ChatCompletionRequest, plan: Plan, deadline: float) -> StreamResult:
        async def open_stream(target: PlannedTarget) -> AsyncIterator[StreamChunk]:
            # Inside run_stream's first-token timeout: the client is already waiting on the lookup.
            call = await self._call(request, target, stream=True)
            return providers.get(target.provider.kind).stream(call)

        held = await self.run_stream(plan, deadline, open_stream, lambda item: item.chunk.has_content())
        return StreamResult(
            held.target, held.attempts, held.held, held.rest, held.deadline, first_token_at=time.monotonic()
        )

    async def embed(self, request: EmbeddingRequest, plan: Plan, deadline: float) -> Embedded:
        """Embeddings under the same retries and fallback. A target whose vectors do not have the
        route's length fails as a server error: vectors of another length must never reach the client."""

        async def attempt(target: PlannedTarget, remaining: float) -> tuple[EmbeddingResponse, bytes | None]:
            call = EmbedCall(request, target, await self.credential(target), self.http)
            async with asyncio.timeout(min(target.timeouts.total_s, remaining)):
                response, raw = await providers.get(target.provider.kind).embed(call)
            length = response.vector_length()
            if target.dimensions is not None and length != target.dimensions:
                message = f"returned vectors of length {length}, the route says {target.dimensions}"
                raise AttemptFailed(ErrorClass.SERVER, f"{target.provider_name}: {message}")
            return response, raw

        (response, raw), target, records = await self._run(plan, deadline, attempt)
        return Embedded(response, raw, target, records)

    async def _call(self, request: ChatCompletionRequest, target: PlannedTarget, *, stream: bool) -> Call:
        check_modalities(request.input_modalities(), target)
        return Call(request, target, await self.credential(target), self.http, stream)

    # ---------------------------------------------------------------- for other wire formats
    # /v1/messages and /v1/embeddings reuse the same retries, fallback and streaming commit.

    async def credential(self, target: PlannedTarget) -> str | None:
        """The target's provider key, or None when it needs none (a failure is server-class)."""
        ref = target.provider.api_key
        try:
            return await self._secrets.resolve(ref) if ref is not None else None
        except SecretUnavailable as exc:
            raise AttemptFailed(ErrorClass.SERVER, str(exc)) from None

    async def call(self, request: ChatCompletionRequest, target: PlannedTarget, *, stream: bool) -> Call:
        return await self._call(request, target, stream=stream)

    async def run(
        self, plan: Plan, deadline: float, invoke: Callable[[PlannedTarget], Awaitable[T]]
    ) -> tuple[T, PlannedTarget, list[AttemptRecord]]:
        """``invoke`` each target in turn under the plan's retries and fallback; the first success."""

        async def attempt(target: PlannedTarget, remaining: float) -> T:
            async with asyncio.timeout(min(target.timeouts.total_s, remaining)):
                return await invoke(target)

        return await self._run(plan, deadline, attempt)

    async def run_stream(
        self,
        plan: Plan,
        deadline: float,
        open_stream: Callable[[PlannedTarget], Awaitable[AsyncIterator[X]]],
        has_output: Callable[[X], bool],
    ) -> HeldStream[X]:
        """Like ``stream`` for any item type: fall back freely until an item ``has_output``."""

        async def attempt(target: PlannedTarget, remaining: float) -> HeldStream[X]:
            now = time.monotonic()
            total_deadline = now + min(target.timeouts.total_s, remaining)
            first_output = now + target.timeouts.connect_s + target.timeouts.first_token_s
            first_deadline = min(first_output, total_deadline)
            async with asyncio.timeout(first_deadline - now):
                upstream = await open_stream(target)
            held: list[X] = []
            try:
                while True:
                    async with asyncio.timeout(first_deadline - time.monotonic()):
                        item = await anext(upstream)
                    held.append(item)
                    if has_output(item):
                        break
            except StopAsyncIteration:
                raise AttemptFailed(
                    ErrorClass.SERVER, f"{target.provider_name}: stream ended before any output"
                ) from None
            except BaseException:
                await upstream.aclose()  # type: ignore[attr-defined]
                raise
            return HeldStream(target, [], held, upstream, total_deadline)

        result, _target, records = await self._run(plan, deadline, attempt)
        result.attempts = records
        return result

    async def _run(
        self,
        plan: Plan,
        deadline: float,
        attempt: Callable[[PlannedTarget, float], Awaitable[T]],
    ) -> tuple[T, PlannedTarget, list[AttemptRecord]]:
        records: list[AttemptRecord] = []
        last: AttemptFailed | None = None
        context_floor: int | None = None
        waited_ms = 0.0
        raced_to = -1  # the index of the last target already tried as a hedge
        for index, target in enumerate(plan.targets):
            go = index > raced_to and _worth_trying(plan, last, target, context_floor)
            if go is None:
                break
            if not go:
                continue
            tries = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._exhausted(
                        plan, records, AttemptFailed(ErrorClass.TIMEOUT, "deadline reached")
                    )
                started = time.monotonic()
                try:
                    result = await _once(plan, index, tries, attempt, remaining, deadline, records)
                except AttemptFailed as exc:
                    failure = exc
                except GatewayError:
                    raise  # a deliberate answer (a refusal), not this target's failure
                except Exception as exc:
                    failure = transport_failure(exc, target)
                else:
                    if isinstance(result, _Raced):  # a hedge ran: the pair is done, either way
                        raced_to = index + 1
                        if result.won is not None:
                            return result.won[0], result.won[1], records
                        last = result.failure
                        break
                    elapsed = (time.monotonic() - started) * 1000
                    records.append(AttemptRecord(target.label, "ok", 200, elapsed, waited_ms))
                    return result, target, records
                elapsed = (time.monotonic() - started) * 1000
                outcome = failure.error_class
                records.append(
                    AttemptRecord(
                        target.label, outcome, failure.status, elapsed, waited_ms, _resets_at(failure)
                    )
                )
                waited_ms = 0.0
                last = failure
                if failure.error_class is ErrorClass.CONTEXT_WINDOW:
                    context_floor = target.context_window or context_floor
                tries += 1
                delay = self._retry_delay(failure, tries, plan.retry)
                if delay is None or time.monotonic() + delay >= deadline:
                    break
                slept = time.monotonic()
                await self._sleep(delay)
                waited_ms = (time.monotonic() - slept) * 1000
        raise self._exhausted(plan, records, last)

    def _retry_delay(self, failure: AttemptFailed, tries: int, policy: RetryPolicy) -> float | None:
        """Seconds to wait before trying the same target again, or None to move on."""
        extra = failure.error_class.max_same_target_retries
        max_tries = policy.attempts if extra is None else min(policy.attempts, 1 + extra)
        if tries >= max_tries:
            return None
        if failure.retry_after_s is not None and policy.honor_retry_after:
            if failure.retry_after_s > policy.max_retry_after_s:
                return None
            return failure.retry_after_s
        step = min(policy.max_delay_ms, policy.base_delay_ms * 2 ** (tries - 1)) / 1000.0
        return float(step / 2 + self._rand() * step / 2)

    @classmethod
    def _exhausted(cls, plan: Plan, records: list[AttemptRecord], last: AttemptFailed | None) -> GatewayError:
        err = cls._failure(plan, records, last)
        err.attempts = records
        # The plan already spent its retries and fallbacks: an SDK's own retries on top would
        # only multiply the upstream calls (the OpenAI and Anthropic SDKs obey this header).
        err.headers["x-should-retry"] = "false"
        return err

    @staticmethod
    def _failure(plan: Plan, records: list[AttemptRecord], last: AttemptFailed | None) -> GatewayError:
        headers = {"x-switchboard-attempts": str(len(records))}
        if records:
            headers["x-switchboard-trail"] = ",".join(r.render() for r in records)
        if last is not None and last.error_class in (
            ErrorClass.CLIENT,
            ErrorClass.CONTENT_POLICY,
            ErrorClass.CONTEXT_WINDOW,
        ):
            if last.status in (401, 403) and last.error_class is ErrorClass.CLIENT:
                err = UpstreamRejected(last.message, status=502, code="upstream_auth_failed", headers=headers)
                err.type = "upstream_error"
                return err
            if last.status == 404 and last.error_class is ErrorClass.CLIENT:
                # The client named a routed alias; what the upstream lacks (the model, or the path
                # under its base URL) is the routing document's mistake, not the client's.
                err = UpstreamRejected(
                    f"{last.message} (the routing document names a model or base URL this upstream "
                    "does not have)",
                    status=502,
                    code="upstream_not_found",
                    headers=headers,
                )
                err.type = "upstream_error"
                return err
            default_code = {
                ErrorClass.CONTEXT_WINDOW: "context_length_exceeded",
                ErrorClass.CONTENT_POLICY: "content_policy_violation",
            }.get(last.error_class)
            err = UpstreamRejected(
                last.message,
                status=last.status or 400,
                code=last.upstream_code or default_code,
                param=last.upstream_param,
                headers=headers,
            )
            if last.upstream_type:
                err.type = last.upstream_type
            return err
        summary = "; ".join(f"{r.target}: {r.outcome} ({r.status or 'no response'})" for r in records)
        message = (
            f"All {len(records)} attempts for model '{plan.alias}' failed: {summary or 'deadline reached'}"
        )
        if last is not None and last.error_class in (ErrorClass.TIMEOUT, ErrorClass.SLOW):
            return AllTargetsFailed(message, status=504, headers=headers)
        if last is not None and last.error_class is ErrorClass.RATE_LIMIT:
            finals = {r.target: r for r in records}.values()  # each target's last word
            wait = _soonest_reset(finals)
            if wait is not None:
                headers["retry-after"] = str(max(1, math.ceil(wait)))
            if all(r.outcome == ErrorClass.RATE_LIMIT for r in finals):
                # Every target is rate limited: the client's answer is a 429 (SDKs raise
                # RateLimitError, not InternalServerError), retried when the soonest one resets.
                limited = AllTargetsFailed(message, status=429, headers=headers)
                limited.type = "rate_limit_error"
                return limited
            return AllTargetsFailed(message, status=503, headers=headers)
        return AllTargetsFailed(message, status=502, headers=headers)


def _worth_trying(
    plan: Plan, last: AttemptFailed | None, target: PlannedTarget, context_floor: int | None
) -> bool | None:
    """Whether to try ``target`` after ``last``: None stops the plan (a class that does not fall
    back), False skips it (no larger than a context window that already overflowed)."""
    if last is None:
        return True
    if last.error_class not in plan.fallback_on and last.error_class is not ErrorClass.SLOW:
        return None
    return not (
        last.error_class is ErrorClass.CONTEXT_WINDOW
        and context_floor is not None
        and target.context_window is not None
        and target.context_window <= context_floor
    )


@dataclass(slots=True)
class _Raced(Generic[T]):
    """A hedge's end: the winner's result and target, or the pair's last failure."""

    won: tuple[T, PlannedTarget] | None
    failure: AttemptFailed | None


async def _once(
    plan: Plan,
    index: int,
    tries: int,
    attempt: Callable[[PlannedTarget, float], Awaitable[T]],
    remaining: float,
    deadline: float,
    records: list[AttemptRecord],
) -> T | _Raced[T]:
    """One try of ``plan.targets[index]``: under its latency trigger (never on the plan's last
    target, which waits its hard timeouts), hedged with the next target when the route says so."""
    target = plan.targets[index]
    trigger = target.timeouts.latency_trigger_s if index < len(plan.targets) - 1 else None
    partner = _hedge_partner(plan, index, tries)
    if partner is None:
        return await _triggered(attempt, target, remaining, trigger)
    started = time.monotonic()
    first = asyncio.ensure_future(_triggered(attempt, target, remaining, trigger))
    if await _finished_within(first, partner[0]):
        return first.result()  # answered (or failed) before the hedge began: a plain attempt
    raced = await _race(attempt, (target, first, started), partner, deadline, records)
    return _Raced(None, raced) if isinstance(raced, AttemptFailed) else _Raced(raced, None)


def _hedge_partner(plan: Plan, index: int, tries: int) -> tuple[float, PlannedTarget, float | None] | None:
    """The hedge for the first try of ``plan.targets[index]``: the delay before it (seconds), the
    next target, and that target's latency trigger; None when the route does not hedge here."""
    if plan.hedge_after_ms is None or tries or index + 1 >= len(plan.targets):
        return None
    following = plan.targets[index + 1]
    trigger = following.timeouts.latency_trigger_s if index + 2 < len(plan.targets) else None
    return plan.hedge_after_ms / 1000, following, trigger


async def _finished_within(task: asyncio.Future[T], seconds: float) -> bool:
    """Whether ``task`` is done within ``seconds``; cancelled with the caller."""
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    return bool(done)


async def _race(
    attempt: Callable[[PlannedTarget, float], Awaitable[T]],
    first: tuple[PlannedTarget, asyncio.Future[T], float],
    partner: tuple[float, PlannedTarget, float | None],
    deadline: float,
    records: list[AttemptRecord],
) -> tuple[T, PlannedTarget] | AttemptFailed:
    """Hedging: ``first`` has had no answer for the hedge delay, so the next target starts too.
    The first to answer wins and the other is cancelled (its connection closed: no more tokens are
    made for nobody), recorded as ``cancelled``. If one fails, the other may still win; if both
    fail, the later failure is returned. Every attempt goes in ``records``."""
    _, second_target, trigger = partner
    second = asyncio.ensure_future(_triggered(attempt, second_target, deadline - time.monotonic(), trigger))
    running: dict[asyncio.Future[T], tuple[PlannedTarget, float]] = {
        first[1]: (first[0], first[2]),
        second: (second_target, time.monotonic()),
    }
    failure: AttemptFailed | None = None
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                target, started = running.pop(task)
                elapsed = (time.monotonic() - started) * 1000
                exc = task.exception()
                if exc is None:
                    await _cancel_all(running, records)
                    records.append(AttemptRecord(target.label, "ok", 200, elapsed))
                    return task.result(), target
                if isinstance(exc, GatewayError):
                    raise exc
                failure = exc if isinstance(exc, AttemptFailed) else transport_failure(exc, target)
                records.append(
                    AttemptRecord(
                        target.label, failure.error_class, failure.status, elapsed, 0.0, _resets_at(failure)
                    )
                )
    finally:
        for task in running:
            task.cancel()  # the caller was cancelled, or a refusal: nothing of the race outlives it
    assert failure is not None
    return failure


async def _cancel_all(
    running: dict[asyncio.Future[T], tuple[PlannedTarget, float]], records: list[AttemptRecord]
) -> None:
    """Cancel the losers of a race and wait for their cleanup (their connections closed)."""
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    for target, started in running.values():
        records.append(AttemptRecord(target.label, "cancelled", None, (time.monotonic() - started) * 1000))
    running.clear()


async def _triggered(
    attempt: Callable[[PlannedTarget, float], Awaitable[T]],
    target: PlannedTarget,
    remaining: float,
    trigger: float | None,
) -> T:
    """``attempt`` under the latency trigger: no result (a stream's first output, a whole buffered
    answer) within ``trigger`` seconds abandons it as ``slow`` (the attempt's own cleanup closes
    the upstream connection)."""
    if trigger is None or trigger >= remaining:
        return await attempt(target, remaining)
    try:
        async with asyncio.timeout(trigger) as scope:
            return await attempt(target, remaining)
    except TimeoutError:
        if not scope.expired():
            raise
        raise AttemptFailed(
            ErrorClass.SLOW, f"{target.provider_name}: no first output within {trigger:g} s (latency trigger)"
        ) from None


def _resets_at(failure: AttemptFailed) -> float | None:
    """When the upstream said it may be tried again (its ``Retry-After``), on the monotonic clock."""
    return None if failure.retry_after_s is None else time.monotonic() + failure.retry_after_s


def _soonest_reset(records: Iterable[AttemptRecord]) -> float | None:
    """Seconds until the first of these attempts' upstreams said it could be tried again."""
    resets = [r.resets_at for r in records if r.outcome == ErrorClass.RATE_LIMIT and r.resets_at is not None]
    return max(0.0, min(resets) - time.monotonic()) if resets else None
