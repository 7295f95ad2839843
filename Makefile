# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch lies on these machines; an open range would pull a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: run test install unit integration e2e lint schemas docs bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[gateway,auth,prompt,local,ml,dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/terra up

test: $(STAMP)
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

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
	rm -rf $(VENV) .pytest_cache .terra-test-logs
