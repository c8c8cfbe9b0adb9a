# AWS SAM CLI targets. The root Makefile includes this file; it also works on its own:
#   make -f mk/sam.mk sam-venv sam-validate sam-build
#
# sam-venv      .venv-sam: a separate venv, because SAM CLI pins its own boto3, click, pydantic
#               and cfn-lint (a dependency of aws-sam-cli; `sam validate --lint` runs it).
#               Re-runs are instant (stamp file); changing SAM_CLI_VERSION reinstalls.
# sam-validate  sam validate --lint (cfn-lint, which runs the SAM transform). Offline.
# sam-build     sam build without a container, into .aws-sam/build. Needs only PyPI.
# sam-clean     removes .aws-sam
#
# No Docker on these machines, so `sam local ...` is out; `sam deploy` needs AWS credentials.

SAM_MK_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
SAM_ROOT := $(patsubst %/,%,$(dir $(SAM_MK_DIR)))

SAM_CLI_VERSION ?= 1.170.0
# SAM CLI 1.170 needs Python >= 3.10; it runs on the machine's python3 (3.11).
SAM_PYTHON ?= $(shell command -v python3 2>/dev/null)
SAM_VENV ?= $(SAM_ROOT)/.venv-sam
SAM_STAMP := $(SAM_VENV)/.stamp
SAM := $(SAM_VENV)/bin/sam
SAM_TEMPLATE ?= $(SAM_ROOT)/template.yaml
SAM_BUILD_DIR ?= $(SAM_ROOT)/.aws-sam/build
SAM_BUILD_FLAGS ?= --parallel

# The Makefile builders compile .pyc files for the Lambda runtime with Python 3.13. SAM passes
# its environment through to make, so exporting PY313 reaches layers/Makefile and
# functions/gateway/Makefile.
ifeq ($(origin PY313),undefined)
PY313 := $(shell for p in python3.13 /root/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
endif
export PY313

SAM_ENV := AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 SAM_CLI_TELEMETRY=0

.PHONY: sam-venv sam-validate sam-build sam-clean sam-venv-reinstall

sam-venv: $(SAM_STAMP)

# Reinstall when the stamp records another SAM CLI version than the one asked for.
ifneq ($(shell cat $(SAM_STAMP) 2>/dev/null),$(SAM_CLI_VERSION))
$(SAM_STAMP): sam-venv-reinstall
endif

$(SAM_STAMP):
	@test -n "$(SAM_PYTHON)" || { echo "sam.mk: python3 not found (set SAM_PYTHON)" >&2; exit 2; }
	rm -rf "$(SAM_VENV)"
	"$(SAM_PYTHON)" -m venv "$(SAM_VENV)"
	"$(SAM_VENV)/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==$(SAM_CLI_VERSION)"
	"$(SAM)" --version
	"$(SAM_VENV)/bin/cfn-lint" --version
	echo "$(SAM_CLI_VERSION)" > "$@"

sam-venv-reinstall:
	@:

sam-validate: sam-venv
	cd "$(SAM_ROOT)" && $(SAM_ENV) "$(SAM)" validate --lint --template-file "$(SAM_TEMPLATE)"

sam-build: sam-venv
	@test -n "$(PY313)" || { echo "sam.mk: python3.13 not found (set PY313=/path/to/python3.13)" >&2; exit 2; }
	cd "$(SAM_ROOT)" && $(SAM_ENV) "$(SAM)" build --template-file "$(SAM_TEMPLATE)" \
		--build-dir "$(SAM_BUILD_DIR)" $(SAM_BUILD_FLAGS)

sam-clean:
	rm -rf "$(SAM_ROOT)/.aws-sam"
