# syntax=docker/dockerfile:1
# The job API (apps/api). Build from the repository root:
#   docker build -f infra/docker/api.Dockerfile -t expertune/api .
# It validates uploaded datasets with the trainer's reader, which loads the native engine, so the
# image carries the addon and OpenBLAS like the CPU worker.

# Node 20.20.0 on Debian 12 (bookworm), slim; the multi-platform index digest (amd64, arm64).
ARG NODE_IMAGE=node:20.20.0-bookworm-slim@sha256:d8a35d586fad3af7abb6fdb9ba972388395405f4d462da9e4a4ddcde67b5e0fb

# --- the package manifests alone, in their folders: `npm ci` layers are reused until one changes
FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN mkdir /manifests \
 && find . -name node_modules -prune -o \( -name package.json -o -name package-lock.json -o -name .npmrc \) -print \
    | xargs -I{} cp --parents {} /manifests

# --- everything built: native addon (cmake-js, OpenBLAS) and the TypeScript packages the API needs
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake python3 libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV CI=1 TURBO_TELEMETRY_DISABLED=1
COPY --from=manifests /manifests/ ./
RUN npm ci --no-audit --no-fund
COPY . .
# turbo builds the native addon (cmake-js) first: the engine depends on it.
RUN npx turbo run build --filter=@expertune/api... --output-logs=errors-only \
 && mkdir /out \
 && cp --parents -r libs/contracts/dist libs/db/dist libs/db/bin libs/formats/dist libs/engine/dist \
    libs/trainer/dist libs/trainer/bin apps/api/dist native/index.cjs native/build/Release/expertune.node \
    infra/docker/healthcheck.mjs models /out

# --- production dependencies of the API and the workspaces it uses, nothing else
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY --from=manifests /manifests/ ./
RUN npm ci --omit=dev --workspace @expertune/api --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 expertune \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home expertune \
 && mkdir -p /data && chown 10001:10001 /data
WORKDIR /app
COPY --from=deps /app/ ./
COPY --from=build /out/ ./
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 EXPERTUNE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "infra/docker/healthcheck.mjs", "http", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["tini", "--"]
CMD ["node", "apps/api/dist/main.js"]
