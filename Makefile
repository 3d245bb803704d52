# The two commands of the README. Both do all set-up on a fresh machine (scripts/bootstrap.sh is
# idempotent: a second run with nothing changed takes seconds).
SHELL := /bin/bash
ENV := source scripts/env.sh
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench lint clean

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

lint: setup
	$(ENV) && python -m flake8 scrap_perception test

clean:
	rm -rf .ws out
