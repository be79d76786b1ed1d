# Driftline: every entry point. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STACK := scripts/stack.sh
STAMP := $(VENV)/.installed

# the pipeline every service runs: `make up PIPELINE_CONFIG=pipelines/weather.yaml`
PIPELINE_CONFIG ?= pipelines/default.yaml
export PIPELINE_CONFIG

# Secrets `make setup` creates once (mode 600, git-ignored): Redis's password. Every
# target that runs something gets REDIS_URL with it (unless REDIS_URL is set already),
# and DRIFTLINE_SIGNING_KEY, the key every registry artifact and checkpoint is signed
# with (services without it read .secrets/signing_key themselves). Kafka's: one
# password per principal (shared/kafka_auth.py), .secrets/kafka_<name>.
SECRETS := .secrets
KAFKA_PRINCIPALS := admin operator producer ingestion features training serving monitoring
KAFKA_SECRETS := $(addprefix kafka_,$(KAFKA_PRINCIPALS))
export REDIS_URL ?= redis://default:$(shell cat $(SECRETS)/redis_password 2>/dev/null)@127.0.0.1:6379/0
export DRIFTLINE_SIGNING_KEY ?= $(shell cat $(SECRETS)/signing_key 2>/dev/null)

# name:port of each service that `make up` starts, in start order
SERVICES := ingestion:8001 features:6066 training:8003 serving:8000 monitoring:8002

.PHONY: setup system-deps venv jars secrets up infra topics services down clean demo demo-ingest test faults \
	test-unit bench soak lint lock status compose-test

setup: system-deps venv jars secrets ## everything a fresh machine needs

secrets: ## .secrets/: redis_password, writer_key, reader_key, signing_key, api_key, grafana_admin_password, kafka_*, if missing
	@mkdir -p $(SECRETS) && chmod 700 $(SECRETS)
	@for name in redis_password writer_key reader_key signing_key api_key grafana_admin_password $(KAFKA_SECRETS); do \
		test -s $(SECRETS)/$$name || { \
		umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 \
		> $(SECRETS)/$$name; echo "created $(SECRETS)/$$name"; }; done
	@# the 700 folder guards it here; compose bind-mounts the file itself into the
	@# containers, where the services' unprivileged user must be able to read it
	@cd $(SECRETS) && chmod 644 redis_password writer_key reader_key signing_key api_key \
		grafana_admin_password $(KAFKA_SECRETS)
	@# the local CA and the broker's certificate for Kafka's SASL_SSL listener
	@scripts/kafka/tls.sh $(SECRETS)

system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

jars:
	$(STACK) jars

lock: ## re-resolve requirements.lock from pyproject.toml's ranges
	rm -rf /tmp/driftline-lock && python3 -m venv /tmp/driftline-lock
	/tmp/driftline-lock/bin/pip install -q --upgrade pip
	/tmp/driftline-lock/bin/pip install -q -e '.[dev]'
	/tmp/driftline-lock/bin/pip freeze --exclude-editable | grep -v '^driftline' > requirements.lock

infra: setup
	$(STACK) infra

topics: infra  # as admin: the services may not create topics
	KAFKA_USERNAME=admin $(PY) -m shared.topics

services: topics
	@for s in $(SERVICES); do $(STACK) service $${s%%:*} $${s##*:} || exit 1; done

up: services ## Kafka, Redis and the services, in the background, healthy
	@$(STACK) status

down:
	$(STACK) down

clean:
	$(STACK) clean

status:
	@$(STACK) status

demo: up ## replay a drifting stream through the loop and print a summary
	$(PY) -m shared.demo

demo-ingest: up ## a handful of good and bad events, and where each lands
	$(PY) -m shared.demo_ingest

test: infra ## the whole suite against the real Kafka and Redis
	$(PY) -m pytest

faults: infra ## the fault suite: kill -9 and pauses mid-stream (it kills the broker)
	$(PY) -m pytest -m faults tests/faults

test-unit: venv
	$(PY) -m pytest tests/unit

bench: infra ## the benchmarks: each figure beside its baseline from the same run
	$(PY) -m benchmarks

compose-test: setup ## compose.yaml for real: build, start, drive from the host, kill a service
	@if $(STACK) status 2>/dev/null | grep -q running; then \
		echo "the local stack is up and holds compose's ports: make down first"; exit 1; fi
	scripts/compose.sh test

soak: infra ## 20 minutes at 1,000 events/s and 50 /predict/s: memory must stay flat
	$(PY) -m benchmarks.soak

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
