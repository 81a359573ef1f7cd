#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
$PY -m pip install --quiet --disable-pip-version-check -e '.[test,demo,rocksdb]'
# From Debian, each for the tests that need it:
# - headless Chromium for the browser tests (Playwright's own browser download is not reachable
#   from these machines); certutil (libnss3-tools) puts the https test's CA into the NSS
#   database Chromium trusts;
# - the image test (tests/image): podman (its `build` is buildah's code) with runc (crun fails
#   here at setrlimit), debootstrap for the local base the Dockerfile is built on.
missing=()
for tool in chromium:chromium certutil:libnss3-tools podman:podman runc:runc debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The benchmark's quix-streams peer runs in a virtualenv of its own: quixstreams brings
# rocksdict, and with rocksdict importable Faust switches its RocksDB store (bench/quix.py).
[ -x .venv-quix/bin/python ] || $PY -m venv .venv-quix
.venv-quix/bin/python -m pip install --quiet --disable-pip-version-check \
    'quixstreams>=3.28.1,<4' 'orjson>=3.9' 'fastjsonschema>=2.19'
