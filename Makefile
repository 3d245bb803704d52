# The two commands of the README. Both do all set-up on a fresh machine (scripts/bootstrap.sh is
# idempotent: a second run with nothing changed takes seconds).
SHELL := /bin/bash
ENV := source scripts/env.sh
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench bench-gpu lint clean

setup:
	bash scripts/bootstrap.sh

demo: setup
	$(ENV) && python -m scrap_perception.ros.demo

test: setup
	$(ENV) && python -m flake8 scrap_perception test && python -m pytest -ra $(PYTEST_ARGS)

test-fast: setup
	$(ENV) && python -m pytest -ra -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(ENV) && python -m scrap_perception.tools.cli bench

# The benchmark on one CUDA device (fp32 and --precision auto; N = 1, 20, 50; 1 and 4 cameras), <= 8 minutes.
bench-gpu: setup
	$(ENV) && python -m scrap_perception.tools.bench.gpu

lint: setup
	$(ENV) && python -m flake8 scrap_perception test

clean:
	rm -rf .ws out
