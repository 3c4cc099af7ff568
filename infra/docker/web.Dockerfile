# syntax=docker/dockerfile:1
# The Next.js console (apps/web). Build from the repository root:
#   docker build -f infra/docker/web.Dockerfile -t expertune/web .
# EXPERTUNE_API_URL (read at request time by the /api proxy) points it at the API.

# Node 20.20.0 on Debian 12 (bookworm), slim; the multi-platform index digest (amd64, arm64).
ARG NODE_IMAGE=node:20.20.0-bookworm-slim@sha256:d8a35d586fad3af7abb6fdb9ba972388395405f4d462da9e4a4ddcde67b5e0fb

FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN mkdir /manifests \
 && find . -name node_modules -prune -o \( -name package.json -o -name package-lock.json -o -name .npmrc \) -print \
    | xargs -I{} cp --parents {} /manifests

FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV CI=1 TURBO_TELEMETRY_DISABLED=1 NEXT_TELEMETRY_DISABLED=1
COPY --from=manifests /manifests/ ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npx turbo run build --filter=@expertune/web... --output-logs=errors-only \
 && rm -rf apps/web/build/cache \
 && mkdir /out \
 && cp --parents -r libs/contracts/dist apps/web/build apps/web/next.config.mjs infra/docker/healthcheck.mjs /out

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY --from=manifests /manifests/ ./
RUN npm ci --omit=dev --workspace @expertune/web --no-audit --no-fund && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 expertune \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home expertune
WORKDIR /app
COPY --from=deps /app/ ./
COPY --from=build /out/ ./
ENV NODE_ENV=production NEXT_TELEMETRY_DISABLED=1 EXPERTUNE_API_URL=http://api:8080
EXPOSE 3000
USER 10001:10001
# `/` redirects to /jobs without calling the API: this checks the console itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "infra/docker/healthcheck.mjs", "http", "http://127.0.0.1:3000/"]
ENTRYPOINT ["tini", "--"]
CMD ["node", "node_modules/next/dist/bin/next", "start", "apps/web", "--port", "3000", "--hostname", "0.0.0.0"]
