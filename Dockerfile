# Multi-stage build: compile TypeScript and build the Python venv the trainer uses, then copy
# only what runs into a slim runtime image.
FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json drizzle.config.ts ./
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY dashboard ./dashboard
RUN npx tsc -p tsconfig.json && npx tsc -p dashboard/tsconfig.json && npm prune --omit=dev

# The runtime and the venv share one base, so the venv's interpreter links stay valid.
FROM node:20-bookworm-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM base AS venv
WORKDIR /app
COPY requirements-trainer.txt ./
# The trainer's pinned requirements (torch, transformers, peft, bitsandbytes).
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install --no-cache-dir -r requirements-trainer.txt

FROM base AS runtime
WORKDIR /app
RUN mkdir -p /data /models && chown node:node /data /models
ENV NODE_ENV=production \
    OPENFT_HOST=0.0.0.0 \
    OPENFT_PORT=8000 \
    OPENFT_DATA_DIR=/data \
    OPENFT_MODELS_DIR=/models \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=4294967296
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=venv /app/.venv ./.venv
COPY package.json ./
COPY bin ./bin
COPY migrations ./migrations
COPY src/engine/trainer ./src/engine/trainer
COPY openapi.yaml ./
COPY dashboard/src ./dashboard/src
VOLUME ["/data", "/models"]
EXPOSE 8000
USER node
ENTRYPOINT ["node", "bin/openft.js"]
CMD ["serve"]

# GPU serving with vLLM (README, "Serving on GPUs with vLLM"): openft stays in front (auth,
# projects, ids, errors, training); each base model gets its own vLLM pool, one vLLM OpenAI server
# per GPU set, started with LoRA on and runtime adapter loading allowed, for example:
#   VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve /models/BASE --served-model-name BASE \
#     --enable-lora --max-lora-rank 16 --max-loras 8 --port 8000
# with /models/BASE the same folder as openft's OPENFT_MODELS_DIR/BASE and a folder both can read
# (NFS, a shared volume) as openft's OPENFT_VLLM_ADAPTER_DIR. Then run this image with
#   OPENFT_VLLM=BASE=http://gpu-a:8000|http://gpu-b:8000  OPENFT_VLLM_ADAPTER_DIR=/adapters
#   OPENFT_VLLM_MAX_LORA_RANK=16 (the replicas' --max-lora-rank)
# Keep the replicas on a private network: their admin endpoints are unauthenticated.
