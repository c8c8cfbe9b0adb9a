"""Virtual keys: the store, the authenticator's cache and expiry, the CLI, and the HTTP surface."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from switchboard.cli import main
from switchboard.core.errors import ServiceUnavailable, Unauthorized
from switchboard.core.principal import Limits, Period, key_digest
from switchboard.limits.keys import DynamoKeyAuthenticator, KeyRevoked, KeyStore, UnknownKey
from switchboard.limits.table import Table

from tests.limits.conftest import items

MSG = [{"role": "user", "content": "a b c"}]


def authenticate(auth: DynamoKeyAuthenticator, token: str):  # type: ignore[no-untyped-def]
    return asyncio.run(auth.authenticate(token))


def test_only_the_digest_is_stored(keys: KeyStore, table: Table) -> None:
    secret, record = keys.create("ci", team="ml", limits=Limits(budget_usd=Decimal("5"), period=Period.DAY))
    assert secret.startswith("sk-sb-") and len(secret) > 40
    stored = items(table)
    assert [i["pk"] for i in stored] == [f"key#{key_digest(secret)}"]
    assert secret not in json.dumps(stored, default=str)
    assert secret[10:] not in json.dumps(stored, default=str)  # not even the part after the prefix
    assert keys.get(record.id) == record


def test_authenticator_returns_the_key_as_principal(keys: KeyStore) -> None:
    secret, record = keys.create(
        "ci", team="ml", user="ana", tags=["a"], models=["echo"], limits=Limits(rpm=5, tpm=100)
    )
    principal = authenticate(DynamoKeyAuthenticator(keys, 30), secret)
    assert (principal.key_id, principal.name, principal.team, principal.user) == (
        record.id,
        "ci",
        "ml",
        "ana",
    )
    assert principal.allowed_models == frozenset({"echo"}) and principal.tags == ("a",)
    assert principal.limits == Limits(rpm=5, tpm=100)
    with pytest.raises(Unauthorized, match="Incorrect API key"):
        authenticate(DynamoKeyAuthenticator(keys, 30), "sk-sb-nope")


def test_revoke_takes_effect_after_the_cache_age(keys: KeyStore) -> None:
    now = [0.0]
    auth = DynamoKeyAuthenticator(keys, 5, clock=lambda: now[0])
    secret, record = keys.create("ci")
    authenticate(auth, secret)
    keys.revoke(record.id)
    authenticate(auth, secret)  # cached: still valid inside the cache age
    now[0] = 5.0
    with pytest.raises(Unauthorized, match="revoked") as caught:
        authenticate(auth, secret)
    assert caught.value.code == "api_key_revoked"


class Outage:
    """``keys.by_digest`` as an unreachable table: it fails (``error``) or hangs until ``gate`` is set."""

    def __init__(self, keys: KeyStore) -> None:
        self.real = keys.by_digest
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.reads = 0

    def __call__(self, digest: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return self.real(digest)


def test_a_known_key_serves_from_its_copy_while_the_store_fails_for_a_bounded_time(keys: KeyStore) -> None:
    now = [0.0]
    auth = DynamoKeyAuthenticator(keys, 5, max_stale_s=60, clock=lambda: now[0])
    known, record = keys.create("known")
    unseen, _ = keys.create("unseen")
    authenticate(auth, known)
    keys.by_digest = outage = Outage(keys)  # type: ignore[method-assign]
    outage.error = ConnectionError("no route to dynamodb")
    now[0] = 10.0
    assert authenticate(auth, known).key_id == record.id  # past its age: stale-if-error
    with pytest.raises(ServiceUnavailable) as caught:  # never seen: nothing to serve, and not a 500
        authenticate(auth, unseen)
    assert (caught.value.status, caught.value.code) == (503, "auth_unavailable")
    assert caught.value.headers["retry-after"].isdigit()
    now[0] = 5 + 60.0  # max_age_s + max_stale_s: too old to vouch for
    with pytest.raises(ServiceUnavailable):
        authenticate(auth, known)
    outage.error = None
    now[0] = 70.0
    assert authenticate(auth, known).key_id == record.id
    assert authenticate(auth, unseen).name == "unseen"


def test_a_revoke_made_during_an_outage_stops_the_key_once_the_store_answers(keys: KeyStore) -> None:
    now = [0.0]
    auth = DynamoKeyAuthenticator(keys, 5, clock=lambda: now[0])
    secret, record = keys.create("ci")

    async def scenario() -> None:
        await auth.authenticate(secret)
        keys.by_digest = outage = Outage(keys)  # type: ignore[method-assign]
        outage.error = ConnectionError("no route to dynamodb")
        keys.revoke(record.id)
        now[0] = 6.0
        assert (await auth.authenticate(secret)).key_id == record.id  # the store cannot say otherwise
        outage.error = None
        now[0] = 7.0  # the table's retry interval (1 s) has passed: a request probes it again...
        async with asyncio.timeout(5):  # ...without waiting; the probe's answer stops the key
            while True:
                try:
                    await auth.authenticate(secret)
                except Unauthorized as exc:
                    assert exc.code == "api_key_revoked"
                    break
                await asyncio.sleep(0.01)
        assert outage.reads == 2

    asyncio.run(scenario())


def test_a_hung_store_is_waited_for_no_longer_than_the_request_deadline(keys: KeyStore) -> None:
    auth = DynamoKeyAuthenticator(keys, 0.01, timeout_s=30)  # only the deadline bounds the wait
    known, record = keys.create("known")
    unseen, _ = keys.create("unseen")
    authenticate(auth, known)
    keys.by_digest = outage = Outage(keys)  # type: ignore[method-assign]
    outage.gate = threading.Event()

    async def scenario() -> None:
        async with asyncio.timeout(5):  # a bound, so a regression fails instead of hanging
            with pytest.raises(ServiceUnavailable):
                await auth.authenticate(unseen, time.monotonic() + 0.2)
            principal = await auth.authenticate(known, time.monotonic() + 0.2)
            assert principal.key_id == record.id  # waited at most half its deadline, then its copy
        outage.gate.set()  # type: ignore[union-attr]


def test_a_read_that_overruns_its_timeout_marks_the_table_failing(keys: KeyStore) -> None:
    auth = DynamoKeyAuthenticator(keys, 0.01, timeout_s=0.1)
    known, record = keys.create("known")
    unseen, _ = keys.create("unseen")
    authenticate(auth, known)
    keys.by_digest = outage = Outage(keys)  # type: ignore[method-assign]
    outage.gate = threading.Event()

    async def scenario() -> None:
        async with asyncio.timeout(5):
            with pytest.raises(ServiceUnavailable):  # the read's 0.1 s, well inside the deadline
                await auth.authenticate(unseen, time.monotonic() + 30)
            for _ in range(3):  # the table is failing: no more waits, no more reads
                assert (await asyncio.wait_for(auth.authenticate(known), 0.05)).key_id == record.id
                with pytest.raises(ServiceUnavailable):
                    await asyncio.wait_for(auth.authenticate(unseen), 0.05)
        assert outage.reads == 1  # the hung read is the table's one probe
        outage.gate.set()  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_short_client_deadline_does_not_mark_the_table_failing(keys: KeyStore) -> None:
    auth = DynamoKeyAuthenticator(keys, 30, timeout_s=5)
    impatient, _ = keys.create("impatient")
    other, record = keys.create("other")
    keys.by_digest = outage = Outage(keys)  # type: ignore[method-assign]
    outage.gate = threading.Event()  # DynamoDB answers, slowly

    async def scenario() -> None:
        with pytest.raises(ServiceUnavailable):  # its own 50 ms ran out, not the read's timeout
            await auth.authenticate(impatient, time.monotonic() + 0.05)
        threading.Timer(0.1, outage.gate.set).start()  # type: ignore[union-attr]
        async with asyncio.timeout(5):
            assert (await auth.authenticate(other)).key_id == record.id  # read, not refused

    asyncio.run(scenario())


def test_expiry_is_checked_on_every_request_even_when_cached(keys: KeyStore) -> None:
    wall = [1000.0]
    auth = DynamoKeyAuthenticator(keys, 300, wall=lambda: wall[0])
    secret, _ = keys.create("temp", expires_at=1010)
    authenticate(auth, secret)
    wall[0] = 1010.0
    with pytest.raises(Unauthorized, match="expired") as caught:
        authenticate(auth, secret)
    assert caught.value.code == "api_key_expired"


def test_rotation_keeps_the_id_and_retires_the_old_secret(keys: KeyStore) -> None:
    clock = [1000.0]
    keys = KeyStore(keys.table, clock=lambda: clock[0])
    old, record = keys.create("svc", limits=Limits(budget_usd=Decimal(3)))
    new, rotated = keys.rotate(record.id, grace_s=60)
    assert rotated.id == record.id and rotated.limits == record.limits and new != old
    auth = DynamoKeyAuthenticator(keys, 0, wall=lambda: clock[0])
    assert authenticate(auth, new).key_id == record.id
    assert authenticate(auth, old).key_id == record.id  # inside the grace period
    clock[0] = 1060.0
    with pytest.raises(Unauthorized, match="rotated out"):
        authenticate(auth, old)
    assert [r.id for r in keys.list()] == [record.id]  # the retired secret is not listed
    newest, _ = keys.rotate(record.id)  # no grace: the previous secret fails at once
    with pytest.raises(Unauthorized):
        authenticate(auth, new)
    assert authenticate(auth, newest).key_id == record.id


def test_store_errors(keys: KeyStore) -> None:
    with pytest.raises(UnknownKey, match="key_missing"):
        keys.get("key_missing")
    _, record = keys.create("x")
    keys.revoke(record.id)
    for action in (
        lambda: keys.revoke(record.id),
        lambda: keys.update(record.id, rpm=5),
        lambda: keys.rotate(record.id),
    ):
        with pytest.raises(KeyRevoked):
            action()
    assert keys.list() == [] and [r.id for r in keys.list(include_revoked=True)] == [record.id]


def test_ensure_is_idempotent_and_revives_a_revoked_known_secret(keys: KeyStore) -> None:
    first = keys.ensure("sk-known", "dev")
    assert keys.ensure("sk-known", "dev") == first
    keys.revoke(first.id)
    assert keys.ensure("sk-known", "dev").revoked_at is None


# ----------------------------------------------------------------------------------- the CLI


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lifecycle(cli_env: Table, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(
        capsys, "keys", "create", "--name", "ci", "--team", "ml", "--tags", "a,b", "--models", "echo,fast",
        "--budget-usd", "12.50", "--period", "week", "--rpm", "60", "--tpm", "10000",
        "--expires", "2099-01-01", "--json",
    )  # fmt: skip
    assert code == 0
    created = json.loads(out)
    assert created["key"].startswith("sk-sb-") and created["id"].startswith("key_")
    assert (created["budget_usd"], created["period"], created["rpm"], created["tpm"]) == (
        "12.50",
        "week",
        60,
        10000,
    )
    assert created["models"] == ["echo", "fast"] and created["expires_at"] == "2099-01-01T00:00:00Z"
    key_id = created["id"]

    code, out, _ = cli(capsys, "keys", "list", "--json")
    assert [k["id"] for k in json.loads(out)] == [key_id] and "key" not in json.loads(out)[0]

    code, out, _ = cli(
        capsys, "keys", "update", key_id, "--no-budget", "--rpm", "5", "--models", "*", "--json"
    )
    updated = json.loads(out)
    assert (code, updated["budget_usd"], updated["rpm"], updated["models"]) == (0, None, 5, "*")

    code, out, _ = cli(capsys, "keys", "show", key_id, "--json")
    shown = json.loads(out)
    assert shown["use"]["rate"]["requests_this_minute"] == 0 and shown["status"] == "active"

    code, out, _ = cli(capsys, "keys", "rotate", key_id, "--json")
    assert code == 0 and json.loads(out)["key"] != created["key"] and json.loads(out)["id"] == key_id

    code, out, _ = cli(capsys, "keys", "revoke", key_id)
    assert code == 0 and "revoked" in out
    code, out, _ = cli(capsys, "keys", "list", "--all", "--json")
    assert json.loads(out)[0]["status"] == "revoked"


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["keys", "show", "key_nope"], 1, "no key with id 'key_nope'"),
        (["keys", "revoke", "key_nope"], 1, "no key with id 'key_nope'"),
        (["keys", "create", "--name", "x", "--budget-usd", "-1"], 2, "non-negative amount of US dollars"),
        (["keys", "create", "--name", "x", "--budget-usd", "ten"], 2, "is not a number of US dollars"),
        (
            ["keys", "create", "--name", "x", "--budget-usd", "1", "--period", "year"],
            2,
            "invalid choice: 'year'",
        ),
        (["keys", "create", "--name", "x", "--period", "day"], 1, "--period needs --budget-usd"),
        (["keys", "create", "--name", "x", "--rpm", "0"], 2, "at least 1 per minute"),
        (["keys", "create", "--name", "x", "--expires", "tomorrow"], 2, "not an ISO 8601 time"),
        (["keys", "create", "--name", "x", "--expires", "2001-01-01"], 1, "--expires is in the past"),
        (["keys", "create"], 2, "--name"),
        (["budgets", "set", "planet:x", "--rpm", "1"], 2, "expected SCOPE:ID"),
        (["budgets", "set", "key:key_1", "--rpm", "1"], 1, "keys update"),
        (["budgets", "show", "team:nobody"], 1, "no limits are set on team:nobody"),
    ],
)
def test_cli_bad_input_gets_a_clear_error(
    cli_env: Table, capsys: pytest.CaptureFixture[str], argv: list[str], status: int, message: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    assert code == status and message in err, err
    assert "Traceback" not in err


def test_cli_refuses_to_change_a_revoked_key(cli_env: Table, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = cli(capsys, "keys", "create", "--name", "x", "--json")
    key_id = json.loads(out)["id"]
    cli(capsys, "keys", "revoke", key_id)
    for argv in (
        ["keys", "revoke", key_id],
        ["keys", "update", key_id, "--rpm", "3"],
        ["keys", "rotate", key_id],
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and "revoked" in err


# ------------------------------------------------------------------------------- over HTTP


def test_http_unknown_revoked_expired_and_forbidden_model(gateway_factory, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(table=table.name, key_cache_s=0.2)
    store = KeyStore(table)
    only_echo, _ = store.create("narrow", models=["echo"])
    revoked, record = store.create("gone")
    url = gw.v1 + "/chat/completions"

    def call(key: str, model: str = "echo") -> httpx.Response:
        return httpx.post(
            url, json={"model": model, "messages": MSG}, headers={"authorization": f"Bearer {key}"}
        )

    assert call(gw.api_key).status_code == 200  # the seeded key (and the gateway warmed)
    # Made just before its first use, with 2-3 s to live: the first request of a cold gateway
    # could take longer than that on a loaded machine.
    expires = int(time.time()) + 3
    expiring, _ = store.create("brief", expires_at=expires)
    assert call(expiring).status_code == 200 and call(only_echo).status_code == 200
    denied = call(only_echo, "other")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    unknown = call("sk-sb-unknown")
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_api_key"

    assert call(revoked).status_code == 200
    store.revoke(record.id)
    time.sleep(0.25)  # the cache age
    gone = call(revoked)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "api_key_revoked"
    assert "revoked" in gone.json()["error"]["message"]

    time.sleep(max(0.0, expires - time.time() + 0.05))
    expired = call(expiring)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "api_key_expired"


def test_cli_shows_ledger_amounts_plainly(cli_env: Table, capsys: pytest.CaptureFixture[str]) -> None:
    from switchboard.limits.ledger import Ledger

    from tests.limits.test_ledger import reservation

    _, out, _ = cli(capsys, "keys", "create", "--name", "x", "--budget-usd", "1", "--json")
    key_id = json.loads(out)["id"]
    book = Ledger(cli_env)
    res = reservation("req_plain", usd="0.25")
    res.budgets = (
        replace(res.budgets[0], ident=key_id, period_id=Period.MONTH.period_id(datetime.now(UTC))),
    )
    book.reserve(res)
    book.settle(res.hold, Decimal("0.0000039"), 1)
    _, out, _ = cli(capsys, "keys", "show", key_id, "--json")
    budget = json.loads(out)["use"]["budget"]
    assert (budget["spent_usd"], budget["reserved_usd"], budget["used_usd"]) == (
        "0.0000039",
        "0",
        "0.0000039",
    )
    _, out, _ = cli(capsys, "budgets", "show", f"key:{key_id}")
    assert "spent $0.0000039, reserved $0 of $1" in out


def test_concurrent_lookups_share_one_read_and_survive_a_cancelled_one(keys: KeyStore) -> None:
    import threading

    secret, record = keys.create("shared")
    gate = threading.Event()
    reads: list[str] = []
    real = keys.by_digest

    def slow(digest: str):  # type: ignore[no-untyped-def]
        reads.append(digest)
        gate.wait(5)
        return real(digest)

    keys.by_digest = slow  # type: ignore[method-assign]
    auth = DynamoKeyAuthenticator(keys, 30)

    async def scenario() -> list[str]:
        first = asyncio.create_task(auth.authenticate(secret))
        await asyncio.sleep(0.05)
        others = [asyncio.create_task(auth.authenticate(secret)) for _ in range(5)]
        await asyncio.sleep(0.05)
        first.cancel()  # the request that went to DynamoDB is abandoned by its client
        await asyncio.sleep(0.05)
        gate.set()
        return [p.key_id for p in await asyncio.gather(*others)]

    assert asyncio.run(scenario()) == [record.id] * 5
    assert len(reads) == 1  # the cancelled request's read is not cancelled: it serves the five


def test_cli_sets_and_clears_a_keys_routing_overrides(
    cli_env: Table, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "keys", "create", "--name", "o", "--json")
    created = json.loads(out)
    assert code == 0 and created["overrides"] == []  # denied by default
    key_id = created["id"]
    code, out, _ = cli(capsys, "keys", "update", key_id, "--overrides", "models,provider.sort", "--json")
    assert code == 0 and json.loads(out)["overrides"] == ["models", "provider.sort"]
    code, out, _ = cli(capsys, "keys", "update", key_id, "--overrides", "*", "--json")
    assert json.loads(out)["overrides"] == ["models", "provider"]
    code, out, _ = cli(capsys, "keys", "show", key_id)
    assert "overrides models,provider" in out
    code, out, _ = cli(capsys, "keys", "update", key_id, "--overrides", "none", "--json")
    assert json.loads(out)["overrides"] == []
    code, _, err = cli(capsys, "keys", "update", key_id, "--overrides", "provider.speed")
    assert code == 1 and "unknown provider.speed" in err
