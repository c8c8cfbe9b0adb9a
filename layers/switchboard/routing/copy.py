"""The routing document's fleet-wide copy in DynamoDB: SSM reads that scale with edits, not instances.

Every instance used to read the SSM parameter every ``max_age_s``: ``N / max_age_s`` calls a
second, SSM's default 40 a second at 200 instances, and a cold start during a throttle answered
503. Now each instance reads one DynamoDB item instead (DynamoDB reads scale), and at most one
instance in the whole fleet reads SSM per ``every_s``:

- the item (``pk = routing#<parameter>``, ``sk = copy``) holds the parameter's value (``source``:
  the document, or the manifest of a split one), the joined document when split (``body``), and
  ``checked_at``, the wall-clock time SSM was last read for it;
- an instance whose read finds ``checked_at`` at least ``every_s`` old claims the next SSM read
  with one conditional write (``checked_at`` from what it saw to now): one claim wins, the others
  serve the copy they just read;
- the winner reads the parameter (one ``GetParameter``), and only when it changed the parts of a
  split document and writes the new copy, on condition that its claim is still the latest (a slow
  reader never overwrites a newer copy);
- the winner also checks that the copy's document is the one its source names, and rewrites it
  if not: the table is writable by the function (``routing#*`` items), so a copy written by
  anything else is in force for at most one check;
- a copy is served even while SSM throttles or fails (the claim already spaced the next attempt
  ``every_s`` later). On a cold instance the claimed read gets ``budget_s`` for its attempts and
  backoffs, so a throttled SSM never holds up a cold start that has the fleet's copy to serve; a
  warm one gives it the client's full retries (its requests do not wait past the read's timeout,
  they are served the document they have). The document is validated by every instance that
  loads it, as from SSM.

Without a copy (a new table, or a claim lost while another instance fills it) the instance reads
SSM itself, with the client's retries and backoff inside the request's deadline; while DynamoDB
fails or does not answer within ``budget_s`` it reads SSM directly too (today's load, for as long
as DynamoDB fails).

An edit made at ``t`` is claimed by ``t + every_s`` plus one read interval, written within the read's
timeout, and picked up by every instance's next read of the copy: ``edit_bound_s``. The
arithmetic is in docs/routing.md.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from switchboard.infra import awsjson
from switchboard.routing import parts

__all__ = ["FleetCopy", "copy_key", "edit_bound_s"]

log = logging.getLogger("switchboard.routing")


def copy_key(name: str) -> dict[str, dict[str, str]]:
    """The copy's item key for parameter ``name`` (one item per parameter, so stacks sharing a
    table, or the tests sharing moto's, never see each other's)."""
    return {"pk": {"S": f"routing#{name}"}, "sk": {"S": "copy"}}


def edit_bound_s(max_age_s: float, timeout_s: float, every_s: float | None = None) -> float:
    """The longest an SSM edit takes to be in force for every request everywhere, while SSM and
    DynamoDB answer within ``timeout_s``: the claim is due ``every_s`` after the last and is taken
    within one serving instance's read interval (``max_age_s + grace``, grace = ``timeout_s``), the
    new copy is written within ``timeout_s``, and every instance serves a copy read within its
    own interval after that."""
    every = max_age_s if every_s is None else every_s
    return every + 2 * (max_age_s + timeout_s) + timeout_s


@dataclass(slots=True)
class _Copy:
    source: str
    text: str
    checked_at: str  # as DynamoDB gave it: the claim's condition compares it exactly


def _faithful(copy: _Copy) -> bool:
    """The copy's document is the one its source names (the source itself, or the join its
    manifest hashes): a copy written by anything but a faithful reader lasts one check."""
    try:
        manifest = parts.manifest_of(copy.source)
    except ValueError:
        return False
    if manifest is None:
        return copy.text == copy.source
    return bool(hashlib.sha256(copy.text.encode()).hexdigest() == manifest["sha256"])


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", type(exc).__name__))


class FleetCopy:
    """``fetch()``: the routing parameter's value (joined when split), through the shared copy."""

    def __init__(
        self,
        ddb: Any,
        table: str,
        name: str,
        ssm: Any,
        every_s: float,
        *,
        budget_s: float | None = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = ddb
        self._table = table
        self._name = name
        self._ssm = ssm
        self.every_s = every_s
        self.budget_s = budget_s
        self._clock = clock
        self._key = copy_key(name)
        self._warm = False  # this instance has had a document from fetch
        self.claims = 0  # SSM reads this instance claimed (a test and the simulation read these)
        self.direct = 0  # SSM reads without a copy (none yet, or DynamoDB failing)

    def fetch(self) -> str:
        """Blocking (run in a worker thread by ``switchboard.infra.refresh``)."""
        text = self._fetch()
        self._warm = True
        return text

    def _fetch(self) -> str:
        try:
            with self._bounded():
                copy, seen = self._get()
        except Exception as exc:
            log.warning("routing copy unreadable (%s); reading SSM directly", _code(exc))
            return self._direct()
        now = self._clock()
        if copy is not None and now - float(copy.checked_at) < self.every_s:
            return copy.text
        mine = f"{now:.6f}"
        if not self._claim(seen, mine):
            return copy.text if copy is not None else self._direct()
        self.claims += 1
        try:
            with self._bounded() if copy is not None and not self._warm else nullcontext():
                source = parts.read_source(self._ssm, self._name)
                if copy is not None and source == copy.source and _faithful(copy):
                    return copy.text  # no edit: one GetParameter for the whole fleet
                text = parts.read(self._ssm, self._name, source)
        except Exception as exc:
            if copy is None:
                raise
            log.warning("routing parameter unread (%s); the fleet's copy keeps serving", _code(exc))
            return copy.text
        self._put(source, text, mine)
        return text

    def _bounded(self) -> AbstractContextManager[None]:
        """The light client's attempts and backoffs end within ``budget_s`` (switchboard.awsjson)."""
        if self.budget_s is None:
            return nullcontext()
        return awsjson.deadline(time.monotonic() + self.budget_s)

    def _direct(self) -> str:
        self.direct += 1
        return parts.read(self._ssm, self._name)

    def _get(self) -> tuple[_Copy | None, str | None]:
        """The copy (None without a document in it) and the ``checked_at`` seen (None: no item)."""
        item = self._ddb.get_item(TableName=self._table, Key=self._key).get("Item")
        if not item:
            return None, None
        checked_at = item.get("checked_at", {}).get("N")
        source = item.get("source", {}).get("S")
        if checked_at is None or source is None:
            return None, checked_at
        text = item.get("body", {}).get("S", source)
        return _Copy(source, text, checked_at), checked_at

    def _claim(self, seen: str | None, mine: str) -> bool:
        """Take the next SSM read for the fleet: True for the one instance whose write lands."""
        condition = "attribute_not_exists(pk)" if seen is None else "checked_at = :seen"
        values = {":now": {"N": mine}} | ({} if seen is None else {":seen": {"N": seen}})
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._key,
                UpdateExpression="SET checked_at = :now",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                log.warning("routing copy claim failed (%s)", _code(exc))
            return False
        return True

    def _put(self, source: str, text: str, mine: str) -> None:
        """The new copy, unless a later claim has been taken meanwhile (its read is newer)."""
        values: dict[str, Any] = {":source": {"S": source}, ":mine": {"N": mine}}
        update = "SET #source = :source"
        if text != source:
            update += ", body = :body"
            values[":body"] = {"S": text}
        else:
            update += " REMOVE body"
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._key,
                UpdateExpression=update,
                ConditionExpression="checked_at = :mine",
                ExpressionAttributeNames={"#source": "source"},
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                log.warning("routing copy not written (%s); the next claim writes it", _code(exc))
