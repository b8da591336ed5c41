# First draft (issue 5 completes it): multi-stage, distroless, non-root.
# Builder: compiles the BPF object (clang), the addon (node-gyp + libbpf) and the TypeScript
# through the same npm scripts CI runs, then drops dev dependencies.
FROM node:24-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev make g++ python3 pkg-config libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY bpf ./bpf
COPY native ./native
COPY src ./src
COPY otel ./otel
COPY test ./test
RUN npm run build && npm prune --omit=dev
# The runtime base has no libbpf/libelf: carry the addon's shared libraries along.
RUN mkdir -p /out/lib && cp -L /usr/lib/x86_64-linux-gnu/libbpf.so.1 /usr/lib/x86_64-linux-gnu/libelf.so.1 \
      /lib/x86_64-linux-gnu/libz.so.1 /out/lib/ \
 && cp -L /usr/local/bin/node /out/node \
 && setcap cap_bpf,cap_net_admin,cap_perfmon+ep /out/node

FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /out/lib/ /usr/lib/x86_64-linux-gnu/
COPY --from=build /out/node /usr/local/bin/node
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/otel ./dist/otel
COPY --from=build /src/native/build/Release/alt_native.node ./native/build/Release/alt_native.node
COPY --from=build /src/bpf/audio_tc.bpf.o ./bpf/audio_tc.bpf.o
USER nonroot
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/node", "/app/dist/src/main.js"]
