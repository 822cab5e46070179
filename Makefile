# Every target installs what it needs into .venv first; nothing else is required
# on a fresh Debian machine with Python 3.11.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: serve test lint protos models bench clean

$(BIN)/python:
	@$(PY) -m venv $(VENV) || { rm -rf $(VENV); echo "cannot create $(VENV): on Debian," \
		"install python3-venv (apt-get install python3-venv) and run make again"; exit 1; }

RUNTIME_LOCK := deploy/docker/requirements.lock
DEV_LOCK := deploy/docker/requirements-dev.lock
PYPROJECTS := pyproject.toml protos/python/pyproject.toml clients/python/pyproject.toml

# Third-party packages only from the hash-checked locks (deploy/docker/make_lock.py writes
# them; docs/runbook.md, "Dependencies"), then the local distributions from the tree with
# --no-deps, so waybill-protos (the generated waybill.v1 stubs) and waybill-client never come
# from an index. pip check fails when a local package's declared requirement is not met.
$(RUNTIME): $(BIN)/python $(RUNTIME_LOCK) $(PYPROJECTS)
	$(PIP) --require-hashes -r $(RUNTIME_LOCK)
	$(PIP) --no-deps -e ./protos/python -e .
	$(BIN)/python -m pip check
	touch $@

$(DEV): $(BIN)/python $(DEV_LOCK) $(PYPROJECTS)
	$(PIP) --require-hashes -r $(DEV_LOCK)
	$(PIP) --no-deps -e ./protos/python -e ./clients/python -e .
	$(BIN)/python -m pip check
	touch $@

## serve: start the server on 127.0.0.1:50051 with the committed models
serve: $(RUNTIME)
	$(BIN)/waybill serve

## test: run the whole test suite; first installs the Debian packages that some tests run
## (prometheus, prometheus-alertmanager, postgresql) with apt-get when they are missing: as
## root, or through sudo where it asks no password (GitHub's runners). The PostgreSQL tests
## start throwaway clusters of their own (tests/pgcluster.py), never the package's.
test: $(DEV)
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null \
		|| missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then \
		echo "not installed and cannot be:$$missing (apt-get needs root, and this user is" \
			"not root and has no sudo without a password; their tests skip)"; \
	else as_root=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$as_root apt-get update -qq && $$as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
		|| echo "apt-get could not install$$missing (their tests skip)"; fi
	$(BIN)/python -m pytest

## lint: ruff, mypy --strict (what it checks: [tool.mypy] in pyproject.toml), buf lint
lint: $(DEV)
	$(BIN)/python -m ruff check server router models clients/python/waybill_client tests protos bench
	$(BIN)/python -m mypy
	$(BIN)/buf lint

## protos: regenerate the committed Python stubs (protos/python) from protos/
protos: $(DEV)
	$(BIN)/python protos/generate.py

## models: rebuild the two committed demo versions from the seeded generator
models: $(DEV)
	$(BIN)/python -m models.build_demo --force

## bench: the benchmark suite (not part of test): one table, every server, bench/RESULTS.md
bench: $(DEV)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
