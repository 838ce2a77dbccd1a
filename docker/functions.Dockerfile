# The Functions image: the Azure Functions host (v4) with the Python 3.11 worker, the inference-only
# dependencies (functions/requirements.txt: onnxruntime, rasterio, the Azure SDKs; no TensorFlow),
# the rtsmonitor package and the app (functions/function_app.py + host.json). Build from the
# repository root:
#   docker build -f docker/functions.Dockerfile --build-arg RTS_CODE_VERSION="$(git describe --always)" \
#       -t rts-functions .
# The live model is not baked in: the app downloads models/current.json's bundle from Blob storage
# on first use and keeps it in RTS_MODEL_CACHE.
#
# Base image: Microsoft's official Functions Python image. "4-python3.11" is the tag the
# azure-functions-docker README lists for host v4 + Python 3.11 (Debian; every wheel that
# requirements.txt resolves to is manylinux_2_28 or older, so nothing is compiled). Microsoft rebuilds it with
# host and security patches under the same tag, so a rebuild picks them up; the images workflow
# writes the base digest it built on into its summary, and pinning that digest here
# (FROM mcr.microsoft.com/azure-functions/python:4-python3.11@sha256:...) rebuilds a release exactly.
FROM mcr.microsoft.com/azure-functions/python:4-python3.11

# MALLOC_ARENA_MAX=2: the concurrent band reads would otherwise each keep a glibc malloc arena;
# with two, a 10,000 km2 site-year peaks at ~1.2 GiB instead of ~1.7 (bench/site_scaling.py).
ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    RTS_MODEL_CACHE=/tmp/rts-models \
    MALLOC_ARENA_MAX=2 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first (the slow, rarely changing layer); every one is pinned in requirements.txt
# and ships a manylinux wheel, so no build tools are installed.
COPY functions/requirements.txt /tmp/rts/requirements.txt
RUN pip install --no-cache-dir -r /tmp/rts/requirements.txt \
    && rm -rf /tmp/rts

# The rtsmonitor package itself, without dependencies (they are all above). Only shared/ is copied:
# training/ (rtstrain, TensorFlow code) has no place here, and setuptools skips its missing folder.
COPY pyproject.toml README.md /tmp/rtsmonitor/
COPY shared /tmp/rtsmonitor/shared
RUN pip install --no-cache-dir --no-deps /tmp/rtsmonitor \
    && rm -rf /tmp/rtsmonitor \
    && rts --help >/dev/null

COPY functions/function_app.py functions/host.json /home/site/wwwroot/

# Stored in every site-year record (images workflow: "<git tag>+<commit sha>"). Declared last, so a
# new version reuses the cached dependency layers above.
ARG RTS_CODE_VERSION=unknown
ENV RTS_CODE_VERSION=${RTS_CODE_VERSION}

# The host's home page answers 200 once it has started (port 80, ASPNETCORE_URLS of the base image).
# Azure Container Apps and App Service use their own probes; this one serves docker compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:80/', timeout=4)"]

# checkov:skip=CKV_DOCKER_3: the Functions base image runs its host as root and listens on port 80 (ASPNETCORE_URLS); Microsoft supports no non-root variant of it, and Azure runs the container under its own sandbox
LABEL org.opencontainers.image.title="rtsmonitor-functions" \
      org.opencontainers.image.description="RTS monitor: Azure Functions app (yearly Sentinel-2 thaw-slump monitoring, ONNX inference)" \
      org.opencontainers.image.version="${RTS_CODE_VERSION}"
