# Switchboard: one command sets up, one runs, one checks.
#   make dev     the gateway on 127.0.0.1:$(PORT) over moto and the mock provider (state kept in
#                .dev-state/; make dev-reset starts clean)
#   make test    install what is needed, then the test suite (what CI runs, with sam-check)
#   make check   lint + type check + the import rule of the layers (make layers)
#   make bench   the short benchmark; bench-full the long one

# The first interpreter that really runs (pyenv shims exist for versions that are not active).
PYTHON ?= $(shell for p in python3.13 /root/.pyenv/versions/3.13*/bin/python3.13 python3.12 python3.11 python3; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
PY313 ?= $(shell for p in python3.13 /root/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
export PY313

# Python writes its bytecode caches (__pycache__, git-ignored) for what make runs, even where the
# environment sets PYTHONDONTWRITEBYTECODE (these machines do): without them every pytest worker
# and every process a test starts compiles its imports from source again (and pytest rewrites
# every test module's asserts again), which was about a fifth of make test's CPU.
unexport PYTHONDONTWRITEBYTECODE

VENV := .venv
VBIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
PYTEST_ARGS ?=
# pytest-xdist workers for make test (0 runs the suite in one process). A test file runs whole in
# one worker (--dist loadfile), so module-scoped fixtures are built once. Two per CPU: most of the
# suite waits on sockets and timeouts, not the CPU (2 cores here: 2 workers 123 s, 4 workers 78-84 s).
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))

# The dev and test environment is locked, with hashes, in requirements-dev.lock (`make lock` after
# changing a dependency in pyproject.toml) and installed by uv. uv reads no pip configuration: it
# resolves from the package index. When uv is not on the PATH it is bootstrapped from the package
# index (pip, pinned) into .venv-tools; nothing is downloaded from anywhere else.
LOCK := requirements-dev.lock
UV_VERSION ?= 0.13.9
UV_TOOLS := .venv-tools
UV_FOUND ?= $(shell command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1 && command -v uv)
UV := $(if $(UV_FOUND),$(UV_FOUND),$(UV_TOOLS)/bin/uv)

.PHONY: venv dev dev-reset test check lint typecheck layers ci sam-check bench bench-full cost-figures clean test-limits-slow lock chromium scale-sim

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) | $(UV)
	@test -n "$(PYTHON)" || { echo "Makefile: no Python >= 3.11 found" >&2; exit 2; }
	$(UV) venv --quiet --allow-existing --python "$(PYTHON)" $(VENV)
	$(UV) pip sync --quiet --python $(VBIN)/python --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(VBIN)/python --no-deps -e .
	touch $@

$(UV_TOOLS)/bin/uv:
	@test -n "$(PYTHON)" || { echo "Makefile: no Python >= 3.11 found" >&2; exit 2; }
	$(PYTHON) -m venv $(UV_TOOLS)
	$(UV_TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Headless Chromium for the console's browser test (tests/integration/test_console_browser.py),
# from Debian's packages; without it that test is skipped, saying so.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@chromium --version

lock: | $(UV)
	$(UV) pip compile --quiet pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" -o $(LOCK)

dev: venv
	PORT=$(PORT) $(VBIN)/switchboard dev

# The local state (keys, routing pushes, budgets, spend) lives in .dev-state/ between runs.
dev-reset: venv
	rm -rf .dev-state
	PORT=$(PORT) $(VBIN)/switchboard dev

test: venv
	$(VBIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(VBIN)/ruff check layers functions tests
	$(VBIN)/ruff format --check layers functions tests

typecheck: venv
	$(VBIN)/mypy layers/switchboard

# The layered package's import rule (tests/test_layers.py: imports point down, no cycle, no
# private names of another module), read from the source with ast; and every shipped module has
# tests found from its name (tests/test_module_tests.py).
layers: venv
	$(VBIN)/python -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_module_tests.py

check: lint typecheck layers

sam-check: sam-validate sam-build

ci: test sam-check

# The long versions of the limits concurrency tests (1000 requests on one budget, 600 across two
# gateway processes); the default run has the short ones.
test-limits-slow: venv
	SWITCHBOARD_SLOW=1 $(VBIN)/python -m pytest -q -m slow tests/limits $(PYTEST_ARGS)

# The scale simulation (docs/limits.md, "At scale"): the limits code against a model of DynamoDB's
# limits (per-item throughput, transaction conflicts, throttling, latency) on a virtual clock,
# one shared team budget at 100..5,000 requests/s, today's design then the new one; then the same
# for one shared team rpm (scalesim rate). A few minutes at most; tests/limits/test_scalesim.py runs
# the short form (--short) in make test, tests/limits/test_rate_lanes.py the rate's. Then the SSM
# mode (scale-sim-ssm): SSM calls per second against the number of warm instances, today's polling
# vs the fleet's copy of the routing document (switchboard.devtools.ssmsim; docs/routing.md),
# seconds on a virtual clock.
SCALE_SIM_ARGS ?=
# The steady state (a budget far from its end, counted once the first settlements are in): the
# lanes without and with leases, for keys with and without limits of their own, and for one key
# sending the whole load with its own limits in lanes (docs/limits.md, "Leases").
SCALE_SIM_STEADY ?= --steady --loads 2000 --duration 6
SSM_SIM_ARGS ?=

scale-sim: venv
	$(VBIN)/python -m switchboard.devtools.scalesim budget $(SCALE_SIM_ARGS)
	$(VBIN)/python -m switchboard.devtools.scalesim budget $(SCALE_SIM_STEADY) --design lanes --design after
	$(VBIN)/python -m switchboard.devtools.scalesim budget $(SCALE_SIM_STEADY) --design lanes --design after --team-only
	$(VBIN)/python -m switchboard.devtools.scalesim budget $(SCALE_SIM_STEADY) --design lanes --design after --one-key
	$(VBIN)/python -m switchboard.devtools.scalesim rate $(SCALE_SIM_ARGS)
	$(VBIN)/python -m switchboard.devtools.ssmsim $(SSM_SIM_ARGS)

.PHONY: scale-sim-ssm
scale-sim-ssm: venv
	$(VBIN)/python -m switchboard.devtools.ssmsim $(SSM_SIM_ARGS)

clean:
	rm -rf $(VENV) $(UV_TOOLS) .venv-sam build/console.png .aws-sam .pytest_cache .mypy_cache .ruff_cache

include mk/sam.mk

# Benchmarks (bench/, docs/performance.md): every target against one local mock, side by side with
# LiteLLM proxy (installed into .bench/). Reports go to bench/results/ (git-ignored).
#   make bench       short and bounded: a few minutes   make bench-full   longer rounds, more runs
BENCH_ARGS ?=

bench: venv
	$(VBIN)/python -m bench --profile short $(BENCH_ARGS)

bench-full: venv
	$(VBIN)/python -m bench --profile full $(BENCH_ARGS)

# The measured inputs of docs/performance.md's AWS cost (bench/costfigures.py): init time and
# per-request CPU under a CPU quota matching Lambda's share at 512 and 256 MB (a cgroup), bytes
# to the client, log bytes and AWS calls per request. A few minutes.
cost-figures: venv
	$(VBIN)/python -m bench.costfigures $(BENCH_ARGS)

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
