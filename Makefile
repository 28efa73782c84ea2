# Everything builds its own environment in .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := $(VENV)/.tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv test test-all lint demo demo-conditional worker api clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned, so nothing resolves a CUDA build on a CPU machine.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $(STAMP)

venv: $(STAMP)

# The deployment checks (tests/test_deploy.py) validate the compose files with Debian's docker-compose and
# docker/prometheus.yml with promtool. promtool is taken out of Debian's prometheus package into .venv/bin
# rather than installing that package, whose maintainer scripts would start a Prometheus server.
# tests/test_browser.py drives Debian's chromium through Playwright (never `playwright install`: no browser download).
$(TOOLS): $(STAMP)
	command -v docker-compose >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	command -v promtool >/dev/null || [ -x $(BIN)/promtool ] || { tmp=$$(mktemp -d) && chmod 777 $$tmp && \
	  { (cd $$tmp && apt-get download -qq prometheus 2>/dev/null) || \
	    { $(SUDO) apt-get update -qq && (cd $$tmp && apt-get download -qq prometheus); }; } && \
	  dpkg-deb --fsys-tarfile $$tmp/prometheus_*.deb | tar -xO ./usr/bin/promtool > $(BIN)/promtool.part && \
	  chmod +x $(BIN)/promtool.part && mv $(BIN)/promtool.part $(BIN)/promtool && rm -rf $$tmp; }
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	docker-compose version --short
	chromium --version 2>/dev/null
	PATH="$(BIN):$$PATH" promtool --version 2>&1 | head -1
	touch $@

test: $(STAMP) $(TOOLS)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(TOOLS)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy models service worker drawai
	$(BIN)/lint-imports

demo: $(STAMP)
	$(BIN)/drawai demo

demo-conditional: $(STAMP)
	$(BIN)/drawai demo --conditional --out drawai-demo-conditional

clean:
	rm -rf $(VENV) drawai-home drawai-demo drawai-demo-conditional
