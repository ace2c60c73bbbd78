#!/usr/bin/env bash
# The chaos soak of integration-tests/python/test_chaos.py for longer than CI runs it:
# mixed load while executors, the indexer and the control-plane leader are SIGKILLed at
# random and etcd is restarted. Usage: scripts/chaos-soak.sh [SECONDS] [SEED]
# (default 600 s and a seed from the clock; the seed is printed for a rerun).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
ensure_build_packages
ensure_python_env
ensure_etcd
log "building lancefleet (target dir $CARGO_TARGET_DIR)"
cargo build --locked --bin lancefleet
export LANCEFLEET_BIN="$CARGO_TARGET_DIR/debug/lancefleet"
export CHAOS_SECONDS="${1:-600}"
if [[ -n "${2:-}" ]]; then export CHAOS_SEED="$2"; fi
cd integration-tests/python
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider test_chaos.py
