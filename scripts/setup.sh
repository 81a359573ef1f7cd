#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
$PY -m pip install --quiet --disable-pip-version-check -e '.[test,demo,rocksdb]'
