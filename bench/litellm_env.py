"""LiteLLM proxy, the self-hosted peer, in a throwaway virtual environment of its own.

The venv lives in ``.bench/litellm-<version>`` (git-ignored) and is reused while its stamp
matches. Nothing of LiteLLM enters the project's own venv. Optional: any failure is returned as
a reason, and the suite reports the rest without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LITELLM_VERSION", "LiteLLM", "ensure_litellm", "litellm_config", "litellm_env"]

# The version DESIGN.md's performance notes were measured with (1.107.0 was a compromised
# release; stay off it).
LITELLM_VERSION = os.environ.get("BENCH_LITELLM_VERSION", "1.108.7")
ROOT = Path(__file__).resolve().parents[1]
MASTER_KEY = "sk-bench-litellm-master"


@dataclass
class LiteLLM:
    venv: Path
    version: str

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def cli(self) -> Path:
        return self.venv / "bin" / "litellm"


def _interpreter() -> str | None:
    for candidate in (
        os.environ.get("PY313"),
        "python3.13",
        *sorted(Path("/root/.pyenv/versions").glob("3.13*/bin/python3.13")),
    ):
        if not candidate:
            continue
        path = shutil.which(str(candidate)) or (str(candidate) if Path(str(candidate)).exists() else None)
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            return path
    return None


def ensure_litellm(log: Path, timeout_s: float = 900.0) -> tuple[LiteLLM | None, str]:
    """Install ``litellm[proxy]==LITELLM_VERSION`` once; returns it, or None and why not."""
    venv = ROOT / ".bench" / f"litellm-{LITELLM_VERSION}"
    stamp = venv / ".installed"
    found = LiteLLM(venv, LITELLM_VERSION)
    if stamp.exists() and found.cli.exists():
        return found, "cached"
    interpreter = _interpreter()
    if interpreter is None:
        return None, "no python3.13 found to install LiteLLM with"
    log.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [interpreter, "-m", "venv", str(venv)],
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"litellm[proxy]=={LITELLM_VERSION}",
        ],
    ]
    with log.open("ab") as out:
        for step in steps:
            try:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return None, f"`{' '.join(step[:3])}` timed out after {timeout_s:.0f}s (log: {log})"
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                return None, f"install failed ({done.returncode}): {' / '.join(tail)[-300:]}"
    if not found.cli.exists():
        return None, "installed, but the `litellm` command is missing"
    stamp.write_text(LITELLM_VERSION)
    return found, "installed"


def litellm_config(mock_base_url: str, models: dict[str, str]) -> str:
    """The proxy config (JSON is YAML): each bench alias -> an OpenAI-compatible model on the mock."""
    config = {
        "model_list": [
            {
                "model_name": alias,
                "litellm_params": {
                    "model": f"openai/{upstream}",
                    "api_base": mock_base_url,
                    "api_key": "mock-provider-key",
                },
            }
            for alias, upstream in models.items()
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": MASTER_KEY},
    }
    return json.dumps(config, indent=2)


def litellm_env() -> dict[str, str | None]:
    """No database, no network: the local cost map, no telemetry."""
    return {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DATABASE_URL": None,
        "NO_DOCS": "True",
        "NO_REDOC": "True",
        "DISABLE_ADMIN_UI": "True",
    }
