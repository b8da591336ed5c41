# audio-latency-tracker: multi-stage, distroless, non-root. docs/image.md explains every choice.
#
# Builder: Debian 12 (bookworm), like the runtime base, so the addon, its shipped libraries and
# the node binary are built for the runtime's glibc. It runs scripts/build-image-root.sh, the same
# script CI runs outside Docker (test/image.test.ts): BPF object, addon, TypeScript, dev
# dependencies pruned, runtime tree assembled in /out, file capabilities set on /out's node.
FROM node:24-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev libelf-dev zlib1g-dev make g++ python3 libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY bpf ./bpf
COPY native ./native
COPY src ./src
COPY otel ./otel
COPY test ./test
RUN bash scripts/build-image-root.sh /out

# Runtime: distroless "cc" (glibc, libstdc++, libgcc_s; no shell, no package manager) plus the
# builder's node binary, which carries file capabilities cap_bpf,cap_net_admin,cap_perfmon+ep.
# Not distroless/nodejs24: its /nodejs/bin/node has no file capabilities and cannot be given
# any here (no RUN), so the image would carry two node binaries; the addon is also built
# against exactly this node's headers. BuildKit keeps the security.capability xattr on COPY.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/node /usr/local/bin/node
COPY --from=build /out/app /app
WORKDIR /app
ENV NODE_ENV=production
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/node", "/app/dist/src/main.js"]
