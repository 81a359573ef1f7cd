PY ?= python3

.PHONY: setup run test unit lock

setup:
	PY=$(PY) bash scripts/setup.sh

# The whole pipeline on an embedded broker, files in ./demo-output/files
run: setup
	$(PY) -m streams.cli demo --output demo-output

# Unit tests, then integration and chaos tests against real servers and a real broker started by
# fixtures: everything on noida-db, then every test that uses the broker again on Tansu
# (IMREF_DEV_BROKER picks the broker; each has a gap the other lacks: README, Tests)
test: setup
	IMREF_DEV_BROKER=noida $(PY) -m pytest -q -rs
	IMREF_DEV_BROKER=tansu $(PY) -m pytest -q -rs --broker-tests-only tests/integration tests/chaos

unit:
	$(PY) -m pytest -q tests/unit

# The image's pinned, hashed runtime dependencies (deploy/Dockerfile installs exactly these)
lock:
	$(PY) -m pip install --quiet pip-tools
	$(PY) -m piptools compile --quiet --extra rocksdb --strip-extras --generate-hashes --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o deploy/requirements.lock pyproject.toml
