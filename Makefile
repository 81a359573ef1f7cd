PY ?= python3

.PHONY: setup run test unit

setup:
	PY=$(PY) bash scripts/setup.sh

# The whole pipeline on an embedded broker, files in ./demo-output/files
run: setup
	$(PY) -m streams.cli demo --output demo-output

# Unit tests, then integration tests against a real broker and real servers started by fixtures
test: setup
	$(PY) -m pytest -q

unit:
	$(PY) -m pytest -q tests/unit
