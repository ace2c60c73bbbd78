#!/usr/bin/env bash
# Installs what is missing, then runs every test: Rust unit tests, and the
# end-to-end suite that drives the real `lancefleet` binary with the real `lancedb` client.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
ensure_build_packages
ensure_python_env
ensure_azurite
ensure_node_client
ensure_etcd
ensure_prometheus

log "building (target dir $CARGO_TARGET_DIR)"
messages="$CARGO_TARGET_DIR/last-test-build.json"
cargo build --locked --workspace --bins --tests --message-format=json-render-diagnostics >"$messages"
prune_target "$messages"

log "Rust tests: unit tests, and the in-process cluster (integration-tests/tests/cluster)"
# etcd is installed above: its tests must run, not skip.
LANCEFLEET_REQUIRE_ETCD=1 cargo test --locked --workspace

export LANCEFLEET_BIN="$CARGO_TARGET_DIR/debug/lancefleet"
cd integration-tests/python
log "end-to-end tests with the lancedb Python client (in-process execution; cluster tests on S3/moto, Azure/Azurite, GCS/fake-gcs-server; the Helm chart rendered, validated and run; metrics, dashboards and alerts against a real Prometheus; traces to a real OTLP receiver)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

log "the same end-to-end suite with every query spread over 3 plan executor processes"
LANCEFLEET_E2E_EXECUTORS=3 "$VENV/bin/python" -m pytest -q -p no:cacheprovider --ignore=test_cluster.py --ignore=test_azure.py --ignore=test_gcs.py --ignore=test_control_plane.py --ignore=test_indexer.py --ignore=test_helm_chart.py --ignore=test_helm_run.py --ignore=test_observability.py --ignore=test_tracing.py --ignore=test_object_store_faults.py --ignore=test_openapi.py --ignore=test_chaos.py --ignore=test_cache_encryption.py "$@"
