# Training image: builds the dataset, trains and evaluates the U-Net, exports ONNX and publishes the
# bundle (python -m rtstrain.pipeline, configured by environment variables; see training/README.md).
# Fit for an Azure Container Apps Job. GPU variant, one line:
#   docker build --build-arg TRAIN_EXTRA=train-gpu -f docker/training.Dockerfile .
FROM python:3.11.11-slim-bookworm

ARG TRAIN_EXTRA=train
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RTS_WORK_DIR=/work

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY training ./training
# The project itself is installed; every dependency is pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[${TRAIN_EXTRA}]" \
    && useradd --create-home --uid 10001 rts \
    && mkdir -p /work && chown rts /work

# The code version (images workflow: "<git tag>+<commit sha>"), declared after the slow layers.
ARG RTS_CODE_VERSION=unknown
ENV RTS_CODE_VERSION=${RTS_CODE_VERSION}
LABEL org.opencontainers.image.version="${RTS_CODE_VERSION}"

USER 10001
WORKDIR /work
# checkov:skip=CKV_DOCKER_2: a batch job (Container Apps Job) with no server to probe; its exit code is its health
ENTRYPOINT ["python", "-m", "rtstrain.pipeline"]
