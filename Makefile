# Two commands do everything on a fresh machine: `make demo` and `make test`.
# torch is installed first (the CPU build), then everything else with a
# constraints file pinning it, so nothing pulls a CUDA torch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgesdk-installed
DEMO := demo-out
PYTEST_ARGS ?=

.PHONY: install browser demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[compress,openvino,tflite-export,llm-compress,examples,search,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/digits/train.py --out $(DEMO)/digits --size 32 --epochs 3
	$(BIN)/edgesdk compress examples/digits/model.py:build_resnet \
		--weights $(DEMO)/digits/weights.safetensors --input x:1x1x32x32 \
		--calib $(DEMO)/digits/calib.npz --eval-data $(DEMO)/digits/eval.npz \
		--prune 0.5 --recover-steps 60 --quantize int8 --threads 2 --batch 1,32 -o $(DEMO)/digits/out

# Debian's Chromium renders the HTML report in a test; installed when missing and we may (root + apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
		  apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
		echo "note: chromium is not installed; the HTML report screenshot test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/fast_by_default.py --out docs/benchmarks-fast.md
	$(BIN)/python benchmarks/llm.py --out docs/benchmarks-llm.md
	$(BIN)/python benchmarks/search.py --out docs/benchmarks-search.md
	$(BIN)/python benchmarks/debug_planted.py --out docs/benchmarks-debug.md

clean:
	rm -rf $(DEMO) .pytest_cache
