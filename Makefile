# Two entry points a new user needs: `make demo` and `make test`.
# Both create .venv on first use (CPU torch first, then the project).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint browser bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/themeshift run examples/kt_study --out runs/demo --human examples/answer_key/human_codes.csv

test: setup browser lint
	$(BIN)/python -m pytest -q

# Lint, format and type checks on the package (settings in pyproject.toml).
lint: setup
	$(BIN)/ruff check pipeline
	$(BIN)/ruff format --check pipeline
	$(BIN)/mypy

# The report's browser test drives Debian's chromium package (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  elif command -v sudo >/dev/null 2>&1; then sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    || echo "could not install chromium without a password: the browser test will be skipped"; \
	  else echo "chromium is not installed and cannot be installed here: the browser test will be skipped"; fi; }

# Benchmarks print their numbers and write bench/results/*.json (about 90 minutes in all; the shift,
# validity and label benches read ../shared/corpora, or $$THEMESHIFT_SHARED/corpora).
bench: demo
	$(BIN)/python bench/segment_throughput.py
	$(BIN)/python bench/map_eval.py runs/demo
	$(BIN)/python bench/shift_speed.py runs/demo
	$(BIN)/python bench/shift_placebo.py
	$(BIN)/python bench/shift_power.py
	$(BIN)/python bench/shift_group.py
	$(BIN)/python bench/validity.py --learn-shares 0.05,0.2 --learn-config bench/validity_dialogue.toml
	$(BIN)/python bench/code_labels.py runs/talkmoves
	$(BIN)/python bench/compare_eval.py runs/demo
	$(BIN)/python bench/codes_pipeline.py
	$(BIN)/python bench/anonymise_eval.py

clean:
	rm -rf runs .pytest_cache
