#!/usr/bin/env bash
# Installs what is missing, builds, and starts `lancefleet standalone`: the LanceDB REST
# API on 127.0.0.1:8080 and Arrow Flight / Flight SQL on 127.0.0.1:10025 over
# ./lancefleet-data. Extra arguments go to the server, e.g.
#   scripts/run-standalone.sh --data-dir /srv/lance --rest-listen 0.0.0.0:8080 --flight-listen 0.0.0.0:10025
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
ensure_build_packages
log "building lancefleet (target dir $CARGO_TARGET_DIR)"
cargo build --locked --bin lancefleet
exec "$CARGO_TARGET_DIR/debug/lancefleet" standalone "$@"
