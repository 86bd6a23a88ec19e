#!/usr/bin/env bash
# The README's test command. Sets up everything the tests need on a fresh machine, then runs
# the whole workspace's tests. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python peers for interoperability tests: a virtualenv with aioquic from PyPI. Later tests
# find the interpreter through GQUIC_PYTHON.
AIOQUIC_VERSION="1.7.2"
VENV="${GQUIC_VENV:-$PWD/.venv}"
if ! "$VENV/bin/python" -c "import aioquic, sys; sys.exit(aioquic.__version__ != '$AIOQUIC_VERSION')" 2>/dev/null; then
    echo "== setting up $VENV with aioquic $AIOQUIC_VERSION"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "aioquic==$AIOQUIC_VERSION"
fi
export GQUIC_PYTHON="$VENV/bin/python"
"$GQUIC_PYTHON" -c "import aioquic; print('== aioquic', aioquic.__version__, 'ready at', '$GQUIC_PYTHON')"

# A real browser for the HTTP/3 browser test: Debian's chromium (installed when missing and we
# can: CI runs as root).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing chromium (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "== chromium is missing and cannot be installed here; tests/browser.rs will fail" >&2
    fi
fi
command -v chromium >/dev/null 2>&1 && chromium --version

echo "== cargo test --workspace"
cargo test --workspace

# The Retry integrity tag uses the provider library directly; check the ring-only build too.
echo "== cargo test -p gquic-transport (ring provider only)"
cargo test -p gquic-transport --no-default-features --features ring --test rfc_vectors

# With aws-lc-rs as the only crypto library, stream data is sealed from the stream's buffer
# (aws-lc-rs' scattered seal); the default build (ring protects packets) copies instead.
echo "== cargo test -p gquic-transport (aws-lc-rs only: sealing from the stream buffer)"
cargo test -p gquic-transport --no-default-features --features aws-lc-rs,runtime-tokio,testing --lib sealed
