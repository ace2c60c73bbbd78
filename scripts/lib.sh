# Shared by scripts/run-standalone.sh and scripts/test.sh: install what is missing, once.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Builds live outside the work tree so clones, sessions and CI share one cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lancefleet-target}"
# test.sh writes the build's messages there before cargo has made it (fresh machine).
mkdir -p "$CARGO_TARGET_DIR"
VENV="${LANCEFLEET_VENV:-$REPO_ROOT/.venv}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
  log "installing $*"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian packages the build needs: protoc and the well-known .proto files (prost-build;
# a recommends of protobuf-compiler, so not installed with --no-install-recommends),
# cmake (aws-lc-sys), mold (linker).
ensure_build_packages() {
  local missing=()
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  [ -f /usr/include/google/protobuf/empty.proto ] || missing+=(libprotobuf-dev)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v mold >/dev/null || missing+=(mold)
  command -v cc >/dev/null || missing+=(build-essential)
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
  if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install a Rust toolchain (https://rustup.rs), then re-run" >&2
    exit 1
  fi
}

# The Python clients the end-to-end tests drive (lancedb, pyarrow, pylance), in a venv.
ensure_python_env() {
  local requirements="$REPO_ROOT/integration-tests/python/requirements.txt"
  local stamp="$VENV/.requirements.sha256"
  local wanted
  wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return
  fi
  log "installing Python test clients into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$wanted" >"$stamp"
}

# Azurite, the Azure Blob Storage emulator the object-store tests run against (npm).
AZURITE_DIR="${LANCEFLEET_AZURITE_DIR:-$HOME/.cache/lancefleet-azurite}"
export LANCEFLEET_AZURITE_BIN="$AZURITE_DIR/node_modules/.bin/azurite-blob"
ensure_azurite() {
  [ -x "$LANCEFLEET_AZURITE_BIN" ] && return
  command -v npm >/dev/null || apt_install nodejs npm
  log "installing Azurite into $AZURITE_DIR"
  mkdir -p "$AZURITE_DIR"
  # 3.35.0 is the newest release that runs on Node 20.
  (cd "$AZURITE_DIR" && npm install --no-save --no-audit --no-fund --silent azurite@3.35.0)
}

# The official LanceDB TypeScript client (@lancedb/lancedb, with the apache-arrow it peers on),
# for integration-tests/python/test_typescript_client.py, which runs
# integration-tests/node/differential.mjs with NODE_PATH=$LANCEFLEET_NODE_MODULES.
# Installed from integration-tests/node/package-lock.json; reinstalled when package.json or
# the lock changes. 0.39.0 declares node >= 22 (npm warns EBADENGINE) but runs the whole
# scenario on Node 20; 0.37.1 is the newest release that declares Node 18/20.
# --ignore-scripts: the client's native module ships inside its npm package; install scripts
# only belong to optional embedding dependencies (onnxruntime-node downloads a binary).
NODE_CLIENT_DIR="${LANCEFLEET_NODE_DIR:-$HOME/.cache/lancefleet-node}"
export LANCEFLEET_NODE_MODULES="$NODE_CLIENT_DIR/node_modules"
ensure_node_client() {
  local source="$REPO_ROOT/integration-tests/node"
  local stamp="$NODE_CLIENT_DIR/.package.sha256"
  local wanted
  wanted="$(cat "$source/package.json" "$source/package-lock.json" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -d "$LANCEFLEET_NODE_MODULES/@lancedb/lancedb" ]; then
    return
  fi
  command -v npm >/dev/null || apt_install nodejs npm
  log "installing the LanceDB TypeScript client into $NODE_CLIENT_DIR"
  mkdir -p "$NODE_CLIENT_DIR"
  rm -f "$stamp"
  cp "$source/package.json" "$source/package-lock.json" "$NODE_CLIENT_DIR/"
  # `npm install` (which follows the lock) rather than `npm ci`: the registry reached here
  # serves only the linux-x64 native packages of the client, so the lock lacks the other
  # platforms' optional packages, and `npm ci` refuses a lock without them.
  (cd "$NODE_CLIENT_DIR" && npm install --no-save --no-audit --no-fund --ignore-scripts --loglevel=error)
  echo "$wanted" >"$stamp"
}

# etcd, the control plane's store, for the control-plane tests (Debian's etcd-server 3.4;
# the tests start their own instances on free ports).
ensure_etcd() {
  command -v etcd >/dev/null || apt_install etcd-server
}

# Prometheus and promtool (Debian's prometheus package), for the observability tests: a real
# Prometheus scrapes a test cluster, promtool checks the alert rules and every /metrics.
# The package's service is not wanted (the tests start their own on free ports).
ensure_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return
  apt_install prometheus
}

# Every rebuild leaves the previous test binaries (~600 MiB each) and incremental caches in
# the shared target dir; over sessions they filled this machine's disk. Given the JSON
# messages of the build just made, removes every executable in debug/deps that build did
# not produce (or hard-link), and incremental caches untouched for 3 days.
prune_target() {
  local messages="$1" debug="$CARGO_TARGET_DIR/debug"
  [ -d "$debug/deps" ] || return 0
  python3 - "$messages" "$debug/deps" <<'PY'
import json, os, sys
messages, deps = sys.argv[1:]
current = set()
with open(messages) as lines:
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            current.add(os.stat(message["executable"]).st_ino)
if not current:
    sys.exit(0)  # nothing known: keep everything
freed = 0
for name in os.listdir(deps):
    path = os.path.join(deps, name)
    if "." in name or not os.path.isfile(path) or not os.access(path, os.X_OK):
        continue
    status = os.stat(path)
    if status.st_ino not in current:
        freed += status.st_size
        os.remove(path)
if freed:
    print(f"pruned {freed / 2**30:.1f} GiB of stale test binaries", file=sys.stderr)
PY
  if [ -d "$debug/incremental" ]; then
    find "$debug/incremental" -mindepth 1 -maxdepth 1 -mtime +3 -exec rm -rf {} +
  fi
}
