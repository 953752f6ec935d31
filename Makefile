# make bench: sweep suites/default.toml on this machine.  make test: the test suite.
# Both create .venv and install facebench with the right extra on first use.
# The newest Python 3.11+ on the machine (facebench needs tomllib and modern typing).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
# gpu when nvidia-smi works, else cpu; override with `make bench EXTRA=cpu`.
EXTRA ?= $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
SUITE ?= suites/default.toml
ARGS ?=

.PHONY: bench test quick runtimes clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "facebench needs Python 3.11 or newer (python3.11, python3.12...); install one or pass PYTHON=/path/to/python3.11"; exit 2; }
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
