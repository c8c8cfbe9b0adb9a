"""The local stack behind ``make dev`` and the integration tests: moto, the mock provider, seeds.

Nothing here touches a real AWS account: every boto3 client is pointed at the in-process moto
server, and the only upstream is the mock unless a real provider key is in the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.devtools.cfn import load_template, table_definitions
from switchboard.settings import Settings

__all__ = ["REAL_PROVIDERS", "DevStack", "aws_env", "build_routing", "seed_aws", "start_moto"]

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"
DEV_ROUTING = ROOT / "infra" / "routing.dev.json"
DEV_KEY = "sk-switchboard-dev"
MOCK_SECRET_PARAM = "/switchboard/secrets/mock"

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


def seed_aws(settings: Settings, routing_text: str, api_key: str, secrets: Mapping[str, str]) -> None:
    """Create the template's tables and the SSM parameters the gateway reads. Idempotent."""
    import boto3

    ddb = boto3.client("dynamodb", region_name=settings.region)
    existing = set(ddb.list_tables()["TableNames"])
    for kwargs, ttl in table_definitions(load_template(TEMPLATE)).values():
        if settings.table in existing:
            continue
        ddb.create_table(TableName=settings.table, **kwargs)
        if ttl:
            ddb.update_time_to_live(
                TableName=settings.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
            )
        existing.add(settings.table)
    _seed_key(ddb, settings.table, api_key)
    ssm = boto3.client("ssm", region_name=settings.region)
    ssm.put_parameter(Name=settings.routing_param, Value=routing_text, Type="String", Overwrite=True)
    for name, value in {MOCK_SECRET_PARAM: "mock-provider-key", **secrets}.items():
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def _seed_key(ddb: Any, table: str, api_key: str) -> None:
    """The dev key in the DynamoDB key store (no limits), so the README's commands work."""
    from switchboard.limits.keys import KeyStore
    from switchboard.limits.table import Table

    KeyStore(Table(ddb, table)).ensure(api_key, name="dev")


@dataclass
class DevStack:
    """moto + mock provider + seeded parameters. ``env`` is what the gateway process needs."""

    moto_port: int = 5055
    mock_port: int = 9100
    api_key: str = DEV_KEY
    routing_file: Path = DEV_ROUTING
    env: dict[str, str] = field(default_factory=dict)
    mock: Any = None
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
            settings = Settings.from_env(source)
            routing, secrets = build_routing(self.routing_file.read_text(), self.mock.base_url, source)
            seed_aws(settings, routing, self.api_key, secrets)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):  # best effort: the process is ending anyway
                self._stops.pop()()
