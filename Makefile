# Switchboard: one command sets up, one runs, one checks.
#   make dev     the gateway on 127.0.0.1:$(PORT) over moto and the mock provider
#   make test    install what is needed, then the test suite (what CI runs, with sam-check)
#   make check   lint + type check
#   make bench   the short benchmark; bench-full the long one

# The first interpreter that really runs (pyenv shims exist for versions that are not active).
PYTHON ?= $(shell for p in python3.13 /root/.pyenv/versions/3.13*/bin/python3.13 python3.12 python3.11 python3; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
PY313 ?= $(shell for p in python3.13 /root/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
export PY313

VENV := .venv
VBIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
PYTEST_ARGS ?=

.PHONY: venv dev test check lint typecheck ci sam-check bench bench-full clean test-limits-slow

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Makefile: no Python >= 3.11 found" >&2; exit 2; }
	test -x $(VBIN)/python || $(PYTHON) -m venv $(VENV)
	$(VBIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

dev: venv
	PORT=$(PORT) $(VBIN)/switchboard dev

test: venv
	$(VBIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VBIN)/ruff check layers functions tests
	$(VBIN)/ruff format --check layers functions tests

typecheck: venv
	$(VBIN)/mypy layers/switchboard

check: lint typecheck

sam-check: sam-validate sam-build

ci: test sam-check

# The long versions of the limits concurrency tests (1000 requests on one budget, 600 across two
# gateway processes); the default run has the short ones.
test-limits-slow: venv
	SWITCHBOARD_SLOW=1 $(VBIN)/python -m pytest -q -m slow tests/limits $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-sam .aws-sam .pytest_cache .mypy_cache .ruff_cache

include mk/sam.mk

# Benchmarks (bench/, docs/performance.md): every target against one local mock, side by side with
# LiteLLM proxy (installed into .bench/). Reports go to bench/results/ (git-ignored).
#   make bench       short and bounded: a few minutes   make bench-full   longer rounds, more runs
BENCH_ARGS ?=

bench: venv
	$(VBIN)/python -m bench --profile short $(BENCH_ARGS)

bench-full: venv
	$(VBIN)/python -m bench --profile full $(BENCH_ARGS)

# The hardening suite (tests/harden; docs/reliability.md has the table it proves): the fault
# matrix, fuzzing, the two-process soak and the secret scan, with a summary of what was lost.
#   make harden        the full form: every fault case, a soak of a few minutes
#   make harden-short  the bounded form CI runs (about two minutes)
.PHONY: harden harden-short audit

harden: venv
	SWITCHBOARD_HARDEN=full $(VBIN)/python -m pytest -q -p no:cacheprovider tests/harden $(PYTEST_ARGS)

harden-short: venv
	SWITCHBOARD_HARDEN=short $(VBIN)/python -m pytest -q -p no:cacheprovider tests/harden $(PYTEST_ARGS)

# Audits in their own venv (.venv-audit: checkov and pip-audit pin their own dependencies):
# checkov over template.yaml (findings are fixed, or skipped inline with a reason), and pip-audit
# over the layer's pinned requirements. AUDIT_OFFLINE=ok lets a machine without the advisory
# services pass with a warning that says how many dependencies were not audited.
AUDIT_VENV := .venv-audit
AUDIT_STAMP := $(AUDIT_VENV)/.installed
AUDIT_OFFLINE ?=

$(AUDIT_STAMP):
	@test -n "$(PY313)" || { echo "Makefile: python3.13 not found (set PY313)" >&2; exit 2; }
	test -x $(AUDIT_VENV)/bin/python || $(PY313) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov pip-audit
	touch $@

audit: $(AUDIT_STAMP)
	$(AUDIT_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f template.yaml
	mkdir -p build
	$(AUDIT_VENV)/bin/pip-audit --no-deps --disable-pip --progress-spinner off -f json -o build/pip-audit.json \
		-r layers/requirements.txt -r layers/requirements-tracing.txt
	$(AUDIT_VENV)/bin/python tests/harden/audit_report.py build/pip-audit.json $(if $(AUDIT_OFFLINE),--offline-ok)
