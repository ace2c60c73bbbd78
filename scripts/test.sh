#!/usr/bin/env bash
# Installs what is missing, then runs every test: Rust unit and integration tests, and the
# end-to-end suite that drives the real `lancefleet` binary with the real `lancedb` client.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
ensure_build_packages
ensure_python_env

log "building (target dir $CARGO_TARGET_DIR)"
cargo build --locked --workspace --bins --tests

log "Rust tests"
cargo test --locked --workspace

log "end-to-end tests with the lancedb Python client"
export LANCEFLEET_BIN="$CARGO_TARGET_DIR/debug/lancefleet"
cd integration-tests/python
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
