# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch lies on these machines; an open range would pull a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# The web console (web/): its npm packages, then the bundle the gateway serves at /.
NPM_STAMP := web/node_modules/.installed
CONSOLE   := web/dist/index.html
# What the console's types come from: every route and model the gateway's OpenAPI shows.
API_SOURCES := $(shell find gateway contracts -name '*.py' 2>/dev/null)
CONSOLE_SOURCES := $(wildcard web/src/*) web/build.mjs web/tsconfig.json
# Debian's browser and driver for tests/browser (root on these machines and CI).
CHROMIUM := /usr/bin/chromium /usr/bin/chromedriver

.PHONY: run test install unit integration e2e e2e-browser console browser lint schemas docs bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[gateway,auth,prompt,notifier,local,ml,dev]"
	touch $(STAMP)

$(NPM_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $(NPM_STAMP)

# The types are generated from the gateway's OpenAPI document (no server needed) and
# checked by tsc before esbuild bundles: a route change that breaks the console fails here.
$(CONSOLE): $(STAMP) $(NPM_STAMP) $(API_SOURCES) $(CONSOLE_SOURCES)
	$(BIN)/python -m gateway.console openapi web/openapi.json
	cd web && npm run -s types && npx tsc --noEmit && node build.mjs

console: $(CONSOLE)

$(CHROMIUM) &:
	apt-get update -qq && apt-get install -y -qq chromium chromium-driver

browser: $(CHROMIUM)

install: $(STAMP) $(CONSOLE) $(CHROMIUM)

run: $(STAMP) $(CONSOLE)
	$(BIN)/terra up

test: $(STAMP) $(CONSOLE) $(CHROMIUM)
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

# The console in Chromium against the whole stack, alone (make test runs it too).
e2e-browser: $(STAMP) $(CONSOLE) $(CHROMIUM)
	$(BIN)/python -m pytest -q -m browser tests/browser

lint: $(STAMP)
	$(BIN)/ruff check .

schemas: $(STAMP)
	$(BIN)/python -m contracts.export

# The generated pages: the settings reference, what each key reaches, the wire schemas.
docs: $(STAMP)
	$(BIN)/python -m terra.ops.config_page --write
	$(BIN)/python -m terra.ops.security_matrix --write
	$(BIN)/python -m contracts.export

bench: $(STAMP)
	$(BIN)/python -m bench.foundation

clean:
	rm -rf $(VENV) .pytest_cache .terra-test-logs web/node_modules web/dist
