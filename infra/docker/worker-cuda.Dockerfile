# syntax=docker/dockerfile:1
# A GPU training worker (apps/worker) on the NVIDIA CUDA runtime with cuBLAS. Build from the
# repository root:
#   docker build -f infra/docker/worker-cuda.Dockerfile -t expertune/worker-cuda .
#   docker build -f infra/docker/worker-cuda.Dockerfile --build-arg CUDA_ARCHITECTURES="80;90;100" …
# The native addon is compiled in the CUDA devel image with nvcc and cuBLAS(Lt) present, so the
# core's CMake (option EXPERTUNE_CUDA, on by default) finds the toolkit and builds its CUDA backend
# (native/src/cuda) for sm_80 (A100) and sm_90 (H100/H200). The host needs the NVIDIA driver
# (≥ 580 for CUDA 13) and the NVIDIA container toolkit; the process sees the GPUs the runtime gives it.
#   EXPERTUNE_ACCELERATOR  the worker's class, i.e. its queue (default cuda; e.g. cuda-h100)
#   EXPERTUNE_DEVICE       which device the engine trains on (default cuda:0, the first GPU the
#                          container sees); one worker per GPU, so run one container per GPU

# Node 20.20.0 on Debian 12, slim (multi-platform index digest): the source of the node binary.
ARG NODE_IMAGE=node:20.20.0-bookworm-slim@sha256:d8a35d586fad3af7abb6fdb9ba972388395405f4d462da9e4a4ddcde67b5e0fb
# CUDA 13.0.1 on Ubuntu 24.04: devel (nvcc, headers) to build, runtime (cudart, cuBLAS) to run.
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04@sha256:7d2f6a8c2071d911524f95061a0db363e24d27aa51ec831fcccf9e76eb72bc92
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04@sha256:c3fde347d52d578c84fd644bc177bc7ec333feaf11550d990da4084d7612e4c7

FROM ${NODE_IMAGE} AS node

FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN mkdir /manifests \
 && find . -name node_modules -prune -o \( -name package.json -o -name package-lock.json -o -name .npmrc \) -print \
    | xargs -I{} cp --parents {} /manifests

FROM ${CUDA_DEVEL_IMAGE} AS build
ARG CUDA_ARCHITECTURES="80;90"
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake python3 libopenblas-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
WORKDIR /app
ENV CI=1 TURBO_TELEMETRY_DISABLED=1
COPY --from=manifests /manifests/ ./
RUN npm ci --no-audit --no-fund
COPY . .
# The addon directly with cmake-js (as scripts/build-native.mjs does), to pass the architectures.
RUN node_modules/.bin/cmake-js build --directory native --out native/build --parallel "$(nproc)" \
      --log-level warn --CDEXPERTUNE_CUDA=ON "--CDCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
 && npx turbo run build --filter=@expertune/worker... --filter=!@expertune/native --output-logs=errors-only \
 && mkdir /out \
 && cp --parents -r libs/contracts/dist libs/db/dist libs/db/bin libs/formats/dist libs/engine/dist \
    libs/trainer/dist libs/trainer/bin apps/worker/dist apps/worker/bin native/index.cjs \
    native/build/Release/expertune.node infra/docker/healthcheck.mjs models /out

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY --from=manifests /manifests/ ./
RUN npm ci --omit=dev --workspace @expertune/worker --no-audit --no-fund && npm cache clean --force

FROM ${CUDA_RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 expertune \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home expertune \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=deps /app/ ./
COPY --from=build /out/ ./
ENV NODE_ENV=production EXPERTUNE_DATA_DIR=/data EXPERTUNE_ACCELERATOR=cuda EXPERTUNE_DEVICE=cuda:0 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME ["/data"]
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "infra/docker/healthcheck.mjs", "worker"]
ENTRYPOINT ["tini", "--"]
CMD ["node", "apps/worker/bin/worker.js"]
