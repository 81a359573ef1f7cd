#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
$PY -m pip install --quiet --disable-pip-version-check -e '.[test,demo,rocksdb]'
# Headless Chromium for the browser tests: Debian's build, since Playwright's own browser
# download is not reachable from these machines; certutil (libnss3-tools) puts the https test's
# CA into the NSS database Chromium trusts. promtool (Debian's prometheus) checks and tests the alert
# rules of deploy/components/monitoring offline.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/certutil ] || [ ! -x /usr/bin/promtool ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium libnss3-tools prometheus >/dev/null
fi
# The benchmark's quix-streams peer runs in a virtualenv of its own: quixstreams brings
# rocksdict, and with rocksdict importable Faust switches its RocksDB store (bench/quix.py).
[ -x .venv-quix/bin/python ] || $PY -m venv .venv-quix
.venv-quix/bin/python -m pip install --quiet --disable-pip-version-check \
    'quixstreams>=3.28.1,<4' 'orjson>=3.9' 'fastjsonschema>=2.19'
