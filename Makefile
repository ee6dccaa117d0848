# chatwoot-bridge: `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Real peers the tests run against (installed by `make test` when running as root):
# Rails ActionCable + puma (upstream), Prometheus + promtool (metrics and alert rules),
# systemd-analyze (the unit's security rating), Chromium (the live page and the JS client).
SYSTEM_PACKAGES := ruby-actioncable puma prometheus systemd chromium

export PYTHONASYNCIODEBUG ?= 1
export PYTHONWARNINGS ?= default

.PHONY: install system-packages demo run simulate test lint typecheck fmt cov clean check bench

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian packages for the real test peers; skipped (with a note) when not root.
system-packages:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "not root: skipping Debian packages ($(SYSTEM_PACKAGES)); their tests will skip"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null \
		|| { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; }; \
	fi

demo: install
	$(BIN)/chatwoot-bridge demo

run: install
	$(BIN)/chatwoot-bridge run

simulate: install
	$(BIN)/chatwoot-bridge simulate

lint: install
	$(BIN)/ruff check bridge tests bench grafana
	$(BIN)/ruff format --check bridge tests bench grafana

typecheck: install
	$(BIN)/mypy bridge

fmt: install
	$(BIN)/ruff format bridge tests bench grafana
	$(BIN)/ruff check --fix bridge tests bench grafana

test: install system-packages lint typecheck
	$(BIN)/pytest -q

# Benchmarks (loopback only, about 15 minutes): tables on stdout, JSON in bench/results/.
bench: install
	env -u PYTHONASYNCIODEBUG $(BIN)/python -m bench

cov: install system-packages
	$(BIN)/pytest -q --cov=bridge --cov-report=term-missing

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
