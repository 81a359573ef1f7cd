PY ?= python3

.PHONY: setup run test unit docs lock image

setup:
	PY=$(PY) bash scripts/setup.sh

# The whole pipeline on an embedded broker, files in ./demo-output/files
run: setup
	$(PY) -m streams.cli demo --output demo-output

# Unit tests, then integration and chaos tests against real servers and a real broker started by
# fixtures: everything on noida-db and, side by side, every test that uses the broker on Tansu
# (IMREF_DEV_BROKER picks the broker; each has a gap the other lacks: docs/testing.md). The passes
# spend most of their time waiting on groups, grace periods and servers, not on the CPU.
TANSU_LOG ?= .test-tansu.log
test: setup
	@IMREF_DEV_BROKER=tansu $(PY) -m pytest -q -rs -p no:cacheprovider --broker-tests-only \
		tests/integration tests/chaos > $(TANSU_LOG) 2>&1 & tansu=$$!; \
	echo "noida-db pass (the Tansu pass runs beside it, output in $(TANSU_LOG)):"; \
	IMREF_DEV_BROKER=noida $(PY) -m pytest -q -rs -p no:cacheprovider; noida=$$?; \
	wait $$tansu; tansu=$$?; echo "Tansu pass:"; cat $(TANSU_LOG); \
	[ $$noida -eq 0 ] && [ $$tansu -eq 0 ]

unit:
	$(PY) -m pytest -q tests/unit

# The documentation site from docs/ into site/; --strict: a broken link or a missing page fails
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The image's pinned, hashed runtime dependencies (deploy/Dockerfile installs exactly these)
lock:
	$(PY) -m pip install --quiet pip-tools
	$(PY) -m piptools compile --quiet --extra rocksdb --strip-extras --generate-hashes --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o deploy/requirements.lock pyproject.toml

# The worker image on the Dockerfile's pinned base, for a machine that reaches a registry;
# BASE=... builds the same file on another base. `make test` builds and runs it on a local base
# (tests/image/).
ENGINE ?= $(shell command -v docker || command -v podman)
IMAGE ?= imref-stream:0.1.0
image:
	@test -n "$(ENGINE)" || { echo "make image: needs docker or podman (or ENGINE=...)" >&2; exit 1; }
	$(ENGINE) build -f deploy/Dockerfile $(if $(BASE),--build-arg BASE=$(BASE)) -t $(IMAGE) .
