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
SUITE ?= suites/default.toml
ARGS ?=
# Exact versions with hashes, one resolution per extra (locks/EXTRA.txt for bench,
# locks/EXTRA-test.txt = the same plus the test tools); `make lock` re-resolves them.
LOCK_BENCH := locks/$(EXTRA).txt
LOCK_TEST := locks/$(EXTRA)-test.txt
# insightface (the tests' reference SCRFD), installed without its dependencies: see the file.
LOCK_REFERENCE := locks/reference.txt
# Ray for facebench fleet and its tests: make test installs it, make bench does not need it.
LOCK_FLEET := locks/fleet.txt
UV_VERSION := 0.13.9

.PHONY: bench test quick runtimes clean lock

# install LOCK: that lock into the venv (one ONNX Runtime wheel kept), facebench itself
# without touching what the lock chose, and a record of the lock for every result row.
define install
	@test -n "$(PYTHON)" || { echo "facebench needs Python 3.11 or newer (python3.11, python3.12...); install one or pass PYTHON=/path/to/python3.11"; exit 2; }
	@test -f $(1) || { echo "no lock file $(1): EXTRA must be cpu or gpu (or run make lock)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python scripts/ensure_one_onnxruntime.py --before $(EXTRA) $(1)
	$(BIN)/python -m pip install -q --require-hashes -r $(1)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python scripts/ensure_one_onnxruntime.py --after $(EXTRA) $(1)
	echo "$(1) $$(sha256sum $(1) | cut -d' ' -f1)" > $(VENV)/facebench-lock.txt
endef

$(VENV)/.installed-$(EXTRA): pyproject.toml $(LOCK_BENCH)
	$(call install,$(LOCK_BENCH))
	rm -f $(VENV)/.installed-* && touch $@

# The test lock holds the bench lock's versions, so a test install serves bench too.
$(VENV)/.installed-$(EXTRA)-test: pyproject.toml $(LOCK_TEST) $(LOCK_REFERENCE) $(LOCK_FLEET)
	$(call install,$(LOCK_TEST))
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK_REFERENCE)
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK_FLEET)
	rm -f $(VENV)/.installed-* && touch $@ $(VENV)/.installed-$(EXTRA)

bench: $(VENV)/.installed-$(EXTRA)
	$(BIN)/facebench run $(SUITE) $(ARGS)

quick: $(VENV)/.installed-$(EXTRA)
	$(BIN)/facebench run suites/quick.toml $(ARGS)

runtimes: $(VENV)/.installed-$(EXTRA)
	$(BIN)/facebench runtimes

test: $(VENV)/.installed-$(EXTRA)-test
	$(BIN)/python -m pytest -q $(ARGS)

# Re-resolve every lock from pyproject.toml's ranges (newest versions that fit), test lock
# first so that the bench lock takes the same versions. Review `git diff locks/`, then make test.
UV_DIR := .cache/uv-$(UV_VERSION)
lock:
	test -x $(UV_DIR)/bin/uv || { $(PYTHON) -m venv $(UV_DIR) && $(UV_DIR)/bin/pip install -q uv==$(UV_VERSION); }
	for extra in cpu gpu; do \
	  $(UV_DIR)/bin/uv pip compile -q pyproject.toml locks/build.in --extra $$extra --extra tools --extra test \
	    --universal --python-version 3.11 --generate-hashes -o locks/$$extra-test.txt && \
	  $(UV_DIR)/bin/uv pip compile -q pyproject.toml locks/build.in --extra $$extra --extra tools \
	    --universal --python-version 3.11 --generate-hashes -c locks/$$extra-test.txt -o locks/$$extra.txt || exit 1; \
	done
	$(UV_DIR)/bin/uv pip compile -q locks/reference.in --no-deps --universal --python-version 3.11 \
	  --generate-hashes -o locks/reference.txt
	$(UV_DIR)/bin/uv pip compile -q pyproject.toml --extra fleet --universal --python-version 3.11 \
	  --generate-hashes -c locks/cpu-test.txt -o locks/fleet.txt

clean:
	rm -rf $(VENV) build *.egg-info
