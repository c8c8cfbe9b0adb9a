"""The dev console in a real browser: ``switchboard dev`` serves it, headless Chromium renders it.

Live requests go through the gateway; the page, as Chromium rendered it (its DOM after the
scripts ran), must show each request's trail, outcome and cost as the gateway reported them in
its response headers and as the console's API returns them, the spend chart as the ledger has
it, and the routing document in force with its revision. A screenshot is taken on each run
(``build/console.png``, git-ignored). Skipped, saying why, when Chromium is not installed.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from switchboard.devtools.console import Console

from tests.integration.devprocess import DEV_KEY, ROOT, WAIT_S, DevProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SCREENSHOT = ROOT / "build" / "console.png"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
)


def chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1500",
        "--virtual-time-budget=8000",  # the page's fetches finish before the DOM is taken
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S * 2, check=False)


def post(dev: DevProcess, body: dict[str, Any]) -> httpx.Response:
    reply = httpx.post(
        dev.base + "/chat/completions",
        headers={"authorization": f"Bearer {DEV_KEY}"},
        json=body,
        timeout=WAIT_S,
    )
    assert reply.status_code == 200, reply.text
    return reply


def console_api(dev: DevProcess, path: str) -> Any:
    reply = httpx.get(dev.base.removesuffix("/v1") + "/console/api/" + path, timeout=WAIT_S)
    assert reply.status_code == 200, reply.text
    return reply.json()


def row_of(dom: str, request_id: str) -> str:
    match = re.search(rf'<tr data-request-id="{re.escape(request_id)}">(.*?)</tr>', dom, re.S)
    assert match, f"no row for {request_id} on the page"
    return match.group(1)


def field(row: str, name: str) -> str:
    match = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', row)
    assert match, f"no {name} in the row"
    return html.unescape(match.group(1))


@needs_chromium
def test_the_console_shows_live_requests_spend_and_routing(dev: DevProcess, tmp_path: Path) -> None:
    before = console_api(dev, "spend")["total"]["requests"]
    fallback = post(dev, {"model": "demo-fallback", "messages": [{"role": "user", "content": "hi there"}]})
    echo = post(dev, {"model": "mock-echo", "messages": [{"role": "user", "content": "one two three"}]})
    deadline = time.monotonic() + WAIT_S  # the spend ledger writes within its flush delay (1 s)
    while console_api(dev, "spend")["total"]["requests"] < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    requests = {r["request_id"]: r for r in console_api(dev, "requests")["requests"]}
    spend = console_api(dev, "spend")
    routing = console_api(dev, "routing")
    url = dev.base.removesuffix("/v1") + "/console"
    shot = chromium(url, tmp_path, f"--screenshot={tmp_path / 'console.png'}", "--dump-dom")
    dom = shot.stdout
    assert console_api(dev, "spend") == spend, "the ledger moved while the page was taken"

    png = (tmp_path / "console.png").read_bytes()
    assert png.startswith(b"\x89PNG"), shot.stderr[-2000:]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(png)
    assert 'data-loaded="1"' in dom, dom[-2000:]

    # each live request: the trail, outcome and cost the gateway sent in its headers
    for reply in (fallback, echo):
        request_id = reply.headers["x-request-id"]
        api = requests[request_id]
        row = row_of(dom, request_id)
        header_trail = [part.split(";")[:2] for part in reply.headers["x-switchboard-trail"].split(",")]
        page_trail = [list(t) for t in re.findall(r'data-target="([^"]+)" data-outcome="([^"]+)"', row)]
        assert page_trail == header_trail == [[a["target"], a["outcome"]] for a in api["trail"]]
        assert field(row, "cost_usd") == reply.headers["x-switchboard-cost-usd"] == api["cost_usd"]
        assert field(row, "outcome") == f"{api['outcome']} {api['status']}" == "ok 200"
        assert field(row, "latency_ms") == f"{math.floor(api['latency_ms'] + 0.5)} ms"  # JS Math.round
    assert len(re.findall(r"data-outcome=", row_of(dom, fallback.headers["x-request-id"]))) == 3

    # spend, by key and by model, as the ledger has it
    assert spend["total"]["requests"] >= before + 2
    for by in ("key", "model"):
        chart = re.search(rf'<svg[^>]*data-chart="{by}"[^>]*>(.*?)</svg>', dom, re.S)
        assert chart, f"no {by} chart"
        bars = re.findall(r'<g data-name="([^"]+)" data-cost="([^"]+)" data-requests="(\d+)"', chart.group(1))
        expected = [(r["name"], r["cost_usd"], str(r["requests"])) for r in spend[f"by_{by}"]]
        assert [(html.unescape(n), c, q) for n, c, q in bars] == expected
    assert set(re.findall(r'<g data-name="([^"]+)"', dom)) >= {"demo-fallback", "mock-echo"}

    # the routing document in force, each alias as its chain
    assert f'data-revision="{routing["revision"]}"' in dom and routing["revision"] == "dev-1"
    chain = re.search(r'<div class="alias" data-alias="demo-fallback">(.*?)</div>', dom, re.S)
    assert chain
    targets = re.findall(r'data-target="([^"]+)"', chain.group(1))
    document = routing["document"]["models"]["demo-fallback"]["targets"]
    assert targets == [f"{t['provider']}/{t['model']}" for t in document]


def test_the_console_is_not_in_the_lambda_app() -> None:
    """``functions/gateway`` serves ``switchboard.http.app.create_app``; only the dev app has /console."""
    app_py = (ROOT / "functions" / "gateway" / "app.py").read_text()
    handler_py = (ROOT / "functions" / "gateway" / "handler.py").read_text()
    assert "create_app()" in app_py and "console" not in app_py + handler_py
    from switchboard.http.app import create_app

    routes = {getattr(r, "path", "") for r in create_app().app.routes}
    assert not any(path.startswith("/console") for path in routes)


def test_the_console_answers_bad_input_with_4xx() -> None:
    from starlette.testclient import TestClient
    from switchboard.http.app import create_app

    client = TestClient(Console(create_app()))  # no lifespan: no gateway needed for these
    assert client.get("/console/api/spend?period=2026-13").status_code == 400
    assert client.get("/console/api/nothing").status_code == 404
    assert client.post("/console").status_code == 405
    assert json.loads(client.get("/console/api/requests").text) == {"requests": []}
    page = client.get("/console")
    assert page.status_code == 200 and "<svg" not in page.text and "/console/api/spend" in page.text
