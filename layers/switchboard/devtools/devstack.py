"""The local stack behind ``make dev`` and the integration tests: moto, the mock provider, seeds.

Nothing here touches a real AWS account: every boto3 client is pointed at the in-process moto
server, and the only upstream is the mock unless a real provider key is in the environment.

Ports are checked before anything starts (``busy_port``), so a taken port is one clear message
instead of a server thread failing behind a waiting main thread. The stack's state (the table's
items: keys, budgets, spend; the SSM parameters: routing pushed, secrets) is written to a snapshot
at shutdown (``save_state``) and loaded at the next start (``restore_state``).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.core.settings import Settings
from switchboard.devtools.cfn import load_template, table_definitions

__all__ = [
    "REAL_PROVIDERS",
    "STATE_DIR",
    "DevStack",
    "aws_env",
    "build_routing",
    "busy_port",
    "restore_state",
    "save_state",
    "seed_aws",
    "stack_tables",
    "start_moto",
]

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"
DEV_ROUTING = ROOT / "infra" / "routing.dev.json"
DEV_KEY = "sk-switchboard-dev"
MOCK_SECRET_PARAM = "/switchboard/secrets/mock"
STATE_DIR = ROOT / ".dev-state"  # git-ignored; ``make dev-reset`` removes it
STATE_VERSION = 1

# name: (environment variable, base URL, model offered under the same alias)
REAL_PROVIDERS: dict[str, tuple[str, str, str]] = {
    "openai": ("OPENAI_API_KEY", "https://api.openai.com/v1", "gpt-4o-mini"),
    "groq": ("GROQ_API_KEY", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile"),
    "together": (
        "TOGETHER_API_KEY",
        "https://api.together.xyz/v1",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    ),
    "mistral": ("MISTRAL_API_KEY", "https://api.mistral.ai/v1", "mistral-small-latest"),
    "deepseek": ("DEEPSEEK_API_KEY", "https://api.deepseek.com/v1", "deepseek-chat"),
    "openrouter": ("OPENROUTER_API_KEY", "https://openrouter.ai/api/v1", "openai/gpt-4o-mini"),
}


def aws_env(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment that points boto3 at moto with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


def start_moto(port: int) -> tuple[Any, str]:
    """An in-process moto server on 127.0.0.1:``port`` (0 picks a free port)."""
    from moto.server import ThreadedMotoServer

    from switchboard.devtools.motopatch import patch_moto_dynamodb

    patch_moto_dynamodb()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    return server, f"http://{host}:{bound}"


def busy_port(ports: Mapping[str, int], host: str = "127.0.0.1") -> str | None:
    """One line naming the variable to change when a port of ``ports`` (variable -> port) is taken
    or named twice; None when every one can be bound. Port 0 (any free port) is never busy."""
    seen: dict[int, str] = {}
    for variable, port in ports.items():
        if port and port in seen:
            return f"{variable} and {seen[port]} are both {port}: set {variable} to another port"
        seen[port] = variable
        if not port:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                probe.bind((host, port))
            except OSError as exc:
                why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
                return f"port {port} ({variable}) {why}: set {variable} to a free port"
    return None


def build_routing(text: str, mock_base_url: str, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The dev routing document with the mock's URL filled in, plus real providers whose keys are set.

    Returns the document text and the provider secrets to store (SSM name -> value).
    """
    doc = json.loads(text.replace("${MOCK_BASE_URL}", mock_base_url))
    secrets: dict[str, str] = {}
    for name, (variable, base_url, model) in REAL_PROVIDERS.items():
        key = env.get(variable)
        if not key:
            continue
        param = f"/switchboard/secrets/{name}"
        secrets[param] = key
        doc["providers"][name] = {"kind": "openai", "base_url": base_url, "api_key": {"ssm": param}}
        fallback = [{"provider": "mock", "model": "echo"}] if "mock" in doc["providers"] else []
        doc["models"][model] = {"targets": [{"provider": name, "model": model}, *fallback]}
    return json.dumps(doc, indent=2), secrets


@functools.cache
def _parsed_tables() -> dict[str, tuple[dict[str, Any], str | None]]:
    return table_definitions(load_template(TEMPLATE))


def stack_tables() -> dict[str, tuple[dict[str, Any], str | None]]:
    """template.yaml's tables (logical id -> (``create_table`` kwargs, TTL attribute or None)),
    parsed once per process: the YAML parse is most of a seed's CPU, and the tests seed a stack
    for most of their gateways. A copy each call, so a caller may change what it is given."""
    return copy.deepcopy(_parsed_tables())


def seed_aws(
    settings: Settings,
    routing_text: str,
    api_key: str,
    secrets: Mapping[str, str],
    overrides: tuple[str, ...] = (),
) -> None:
    """Create the template's tables, the key ``api_key`` (allowed the routing ``overrides``) and
    the SSM parameters the gateway reads. Idempotent."""
    import boto3

    ddb = boto3.client("dynamodb", region_name=settings.region)
    existing = set(ddb.list_tables()["TableNames"])
    for kwargs, ttl in stack_tables().values():
        if settings.table in existing:
            continue
        ddb.create_table(TableName=settings.table, **kwargs)
        if ttl:
            ddb.update_time_to_live(
                TableName=settings.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
            )
        existing.add(settings.table)
    _seed_key(ddb, settings.table, api_key, overrides)
    ssm = boto3.client("ssm", region_name=settings.region)
    ssm.put_parameter(Name=settings.routing_param, Value=routing_text, Type="String", Overwrite=True)
    for name, value in {MOCK_SECRET_PARAM: "mock-provider-key", **secrets}.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def _seed_key(ddb: Any, table: str, api_key: str, overrides: tuple[str, ...]) -> None:
    """The dev key in the DynamoDB key store (no limits; the routing ``overrides`` it may use), so
    the README's commands work."""
    from switchboard.limits.keys import KeyStore
    from switchboard.limits.table import Table

    KeyStore(Table(ddb, table)).ensure(api_key, name="dev", overrides=overrides)


def save_state(path: Path, settings: Settings, seeded_routing: str, mock_base_url: str = "") -> int:
    """Write moto's state (every SSM parameter, every item of the stack's table) to ``path``,
    atomically. ``seeded_routing`` is the routing document the stack seeded, so that a restart
    can tell a pushed document (kept) from the seed (taken fresh from the file). Returns the
    number of items written."""
    import boto3

    ssm = boto3.client("ssm", region_name=settings.region)
    parameters = [
        {"Name": p["Name"], "Type": p["Type"], "Value": p["Value"]}
        for page in ssm.get_paginator("get_parameters_by_path").paginate(
            Path="/", Recursive=True, WithDecryption=True
        )
        for p in page["Parameters"]
    ]
    ddb = boto3.client("dynamodb", region_name=settings.region)
    items = [
        item
        for page in ddb.get_paginator("scan").paginate(TableName=settings.table)
        for item in page.get("Items", [])
        if not item["pk"]["S"].startswith("routing#")  # the routing copy: refilled from SSM
    ]
    state = {
        "version": STATE_VERSION,
        "seeded_routing": seeded_routing,
        "mock_base_url": mock_base_url,
        "ssm": parameters,
        "dynamodb": {settings.table: items},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(state), encoding="utf-8")
    partial.replace(path)
    return len(items)


def restore_state(path: Path, settings: Settings, keep: set[str], mock_base_url: str = "") -> bool:
    """Load a snapshot of ``save_state`` into moto (after ``seed_aws``). Parameters named in
    ``keep`` stay as seeded (the provider secrets, taken fresh from the environment); the routing
    document is restored only if it had been pushed (it differs from the seed of that run), with
    the mock provider's URL of that run changed to this run's (``MOCK_PORT`` may differ).
    Returns False when there is no snapshot, or it is unreadable (then the stack starts clean)."""
    import boto3

    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("version") != STATE_VERSION:
            return False
    except (OSError, ValueError):
        return False
    from switchboard.routing import parts

    ssm = boto3.client("ssm", region_name=settings.region)
    old_mock = state.get("mock_base_url") or ""
    saved = {param["Name"]: param["Value"] for param in state.get("ssm", [])}
    part_prefix = settings.routing_param + "/part-"
    for param in state.get("ssm", []):
        name, value = param["Name"], param["Value"]
        if name.startswith(part_prefix):  # a split document is pushed again whole, below
            continue
        if name == settings.routing_param:
            value = _joined(value, saved)
        if (
            value is None
            or name in keep
            or (name == settings.routing_param and value == state.get("seeded_routing"))
        ):
            continue
        if name == settings.routing_param:
            if old_mock and mock_base_url:
                value = value.replace(json.dumps(old_mock)[1:-1], json.dumps(mock_base_url)[1:-1])
            parts.write(ssm, name, value)  # new part versions, and their manifest
            continue
        tier = "Advanced" if len(value.encode()) > 4096 else "Standard"
        ssm.put_parameter(Name=name, Value=value, Type=param["Type"], Overwrite=True, Tier=tier)
    ddb = boto3.client("dynamodb", region_name=settings.region)
    items = state.get("dynamodb", {}).get(settings.table, [])
    for start in range(0, len(items), 25):  # BatchWriteItem's limit
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        pending: dict[str, Any] = {settings.table: batch}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    return True


def _joined(value: str, saved: Mapping[str, str]) -> str | None:
    """A saved routing parameter's document: itself, or its parts joined (their saved values are
    the latest, which the latest manifest names); None when they do not make its document."""
    from switchboard.routing import parts

    def get_parameters(Names: list[str], **_: Any) -> dict[str, Any]:  # SSM's own argument name
        found = []
        for selector in Names:
            name, _sep, version = selector.rpartition(":")
            if name in saved:
                found.append({"Name": name, "Version": int(version), "Value": saved[name]})
        return {"Parameters": found}

    try:
        manifest = parts.manifest_of(value)
        return value if manifest is None else parts.join(manifest, get_parameters)
    except ValueError:
        return None


@dataclass
class DevStack:
    """moto + mock provider + seeded parameters. ``env`` is what the gateway process needs."""

    moto_port: int = 5055
    mock_port: int = 9100
    api_key: str = DEV_KEY
    routing_file: Path = DEV_ROUTING
    # The snapshot loaded at start and written by ``save``; None keeps no state.
    state_file: Path | None = None
    # True: the routing file is seeded even over a pushed document in the snapshot (ROUTING_FILE).
    routing_wins: bool = False
    env: dict[str, str] = field(default_factory=dict)
    mock: Any = None
    restored: bool = False
    settings: Settings = field(default_factory=Settings)
    _seeded: str = ""
    _stops: list[Any] = field(default_factory=list)

    def start(self, base_env: Mapping[str, str] | None = None) -> DevStack:
        from switchboard.devtools.mockupstream import run_in_thread

        source = dict(os.environ if base_env is None else base_env)
        try:
            moto, moto_url = start_moto(self.moto_port)
            self._stops.append(moto.stop)
            self.mock, stop_mock = run_in_thread(port=self.mock_port)
            self._stops.append(stop_mock)
            self.env = aws_env(moto_url)
            os.environ.update(self.env)  # boto3 reads AWS_ENDPOINT_URL from the environment
            self.settings = settings = Settings.from_env(source)
            routing, secrets = build_routing(self.routing_file.read_text(), self.mock.base_url, source)
            self._seeded = routing
            # The dev key may try the per-request overrides (``models``, ``provider``) locally.
            seed_aws(settings, routing, self.api_key, secrets, overrides=("models", "provider"))
            if self.state_file is not None:
                keep = {MOCK_SECRET_PARAM, *secrets}
                if self.routing_wins:
                    keep.add(settings.routing_param)
                self.restored = restore_state(self.state_file, settings, keep, self.mock.base_url)
        except BaseException:
            self.stop()
            raise
        return self

    def save(self) -> int | None:
        """Write the snapshot (when the stack keeps state); the number of items saved."""
        if self.state_file is None or not self._seeded:
            return None
        return save_state(self.state_file, self.settings, self._seeded, self.mock.base_url)

    def stop(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):  # best effort: the process is ending anyway
                self._stops.pop()()
