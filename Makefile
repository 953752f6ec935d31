# make bench: sweep suites/default.toml on this machine.  make test: the test suite.
# Both create .venv and install facebench with the right extra on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# gpu when nvidia-smi works, else cpu; override with `make bench EXTRA=cpu`.
EXTRA ?= $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
SUITE ?= suites/default.toml
ARGS ?=

.PHONY: bench test quick runtimes clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python scripts/ensure_one_onnxruntime.py --before $(EXTRA)
	$(BIN)/python -m pip install -q -e '.[$(EXTRA),tools,test]'
	$(BIN)/python scripts/ensure_one_onnxruntime.py --after $(EXTRA)
	rm -f $(VENV)/.installed-* && touch $@

bench: $(STAMP)
	$(BIN)/facebench run $(SUITE) $(ARGS)

quick: $(STAMP)
	$(BIN)/facebench run suites/quick.toml $(ARGS)

runtimes: $(STAMP)
	$(BIN)/facebench runtimes

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
