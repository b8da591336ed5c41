#!/usr/bin/env bash
# Builds what the container image runs and assembles its file tree under OUT_DIR:
#
#   OUT_DIR/usr/local/bin/node      the Node.js that built the addon, with file capabilities
#                                   cap_bpf,cap_net_admin,cap_perfmon+ep (docs/image.md says why)
#   OUT_DIR/app/package.json        (the agent finds its root and version through it)
#   OUT_DIR/app/node_modules/       production dependencies only
#   OUT_DIR/app/dist/{src,otel}/    compiled TypeScript
#   OUT_DIR/app/bpf/audio_tc.bpf.o  the TC classifier
#   OUT_DIR/app/native/build/Release/alt_native.node  + libbpf.so.1 libelf.so.1 libz.so.1
#                                   (found through the addon's RUNPATH $ORIGIN)
#
# The Dockerfile's builder stage runs exactly this script; CI runs it outside Docker
# (test/image.test.ts), so the image's build steps are tested without a Docker engine.
# It builds in a scratch copy of the sources: the checkout's own build outputs and its dev
# dependencies are left alone. Must run as root (setcap).
#
#   scripts/build-image-root.sh OUT_DIR     OUT_DIR must be absent or empty
set -euo pipefail

log() { printf '[build-image-root] %s\n' "$*" >&2; }
die() {
  printf 'build-image-root: %s\n' "$*" >&2
  exit 1
}

out="${1:-}"
[ -n "$out" ] || die "usage: $0 OUT_DIR"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  die "OUT_DIR $out is not empty (refusing to overwrite it)"
fi
[ "$(id -u)" -eq 0 ] || die "must run as root: it sets file capabilities on the node binary"
command -v setcap >/dev/null || die "setcap not found (Debian package libcap2-bin)"
[ -d "$root/node_modules" ] || die "$root/node_modules is missing: run npm ci first"

# The file capabilities the image's node binary carries. Kernels before 5.8 have no CAP_BPF or
# CAP_PERFMON: there the agent must run as root with CAP_SYS_ADMIN (docs/image.md).
readonly NODE_CAPS='cap_bpf,cap_net_admin,cap_perfmon+ep'
# Libraries the addon needs that the distroless runtime base lacks (Debian's libbpf.a and
# libelf.a are not position-independent, so they cannot be linked into the addon statically).
readonly SHIPPED_LIBS='libbpf.so.1 libelf.so.1 libz.so.1'

node_bin="$(readlink -f "$(command -v node)")"
node_prefix="$(dirname "$(dirname "$node_bin")")"
# node-gyp must build against this node's own headers (the binary the image ships), never
# download them.
if [ -f "$node_prefix/include/node/node_api.h" ]; then
  export npm_config_nodedir="$node_prefix"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/alt-image-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

stage_sources() {
  log "staging sources in $work"
  cp -a "$root"/package.json "$root"/package-lock.json "$root"/tsconfig.json "$work"/
  local d
  for d in bpf native src otel test scripts; do
    cp -a "$root/$d" "$work/$d"
  done
  rm -rf "$work/native/build" "$work"/bpf/*.o
  # A real copy, not hard links: npm prune rewrites files such as node_modules/.package-lock.json
  # in place, which would reach through a hard link into the checkout.
  cp -a "$root/node_modules" "$work/node_modules"
}

build() {
  log "building BPF object, addon and TypeScript (node $("$node_bin" --version))"
  (cd "$work" && npm run --silent build)
}

prune() {
  log "pruning dev dependencies"
  (cd "$work" && npm prune --omit=dev --no-audit --no-fund --loglevel=error)
}

# Where the dynamic linker finds `lib` for the built addon (the build machine's copy).
resolved_lib() {
  local lib="$1" addon="$2" path
  path="$(ldd "$addon" | awk -v l="$lib" '$1 == l { print $3 }')"
  [ -n "$path" ] && [ -f "$path" ] || die "ldd $addon: $lib not resolved"
  printf '%s\n' "$path"
}

assemble() {
  local app="$out/app" addon="$work/native/build/Release/alt_native.node" lib
  log "assembling the runtime tree in $out"
  mkdir -p "$app/dist" "$app/bpf" "$app/native/build/Release" "$out/usr/local/bin"
  cp -a "$work/package.json" "$app/"
  cp -a "$work/node_modules" "$app/node_modules"
  cp -a "$work/dist/src" "$work/dist/otel" "$app/dist/"
  cp -a "$work/bpf/audio_tc.bpf.o" "$app/bpf/"
  cp -a "$addon" "$app/native/build/Release/"
  for lib in $SHIPPED_LIBS; do
    cp -L "$(resolved_lib "$lib" "$addon")" "$app/native/build/Release/$lib"
  done
  cp -L "$node_bin" "$out/usr/local/bin/node"
  # Owned by root, read-only for everyone else: the non-root agent cannot rewrite its own code.
  chown -R 0:0 "$out"
  chmod -R u+rwX,go+rX,go-w "$out"
  # Last: chown clears file capabilities.
  setcap "$NODE_CAPS" "$out/usr/local/bin/node"
  getcap "$out/usr/local/bin/node" | grep -q 'cap_net_admin' ||
    die "setcap $NODE_CAPS on $out/usr/local/bin/node did not stick"
}

stage_sources
build
prune
assemble
log "done: $(du -sh "$out" | cut -f1) in $out"
