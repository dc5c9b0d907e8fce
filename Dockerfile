# shoprec's one image: every KFP component (base_image), both KServe servers and the PyTorchJob
# run it. No data and no secrets inside: data sets come from PyPI packages, secrets from the
# cluster's environment at run time.
#
#   CPU (default):  make image                       (docker build -t $SHOPREC_IMAGE .)
#   GPU steps:      make image-gpu, i.e. docker build \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                     --build-arg REQUIRE_CUDA=1 -t $SHOPREC_GPU_IMAGE .
# The GPU variant is this file with other build arguments (not a copy that could drift): the
# train step and the PyTorchJob workers run it ($SHOPREC_GPU_IMAGE), every other step the CPU one.
# Any base works that is Debian/Ubuntu-like: Python 3.11 is installed from apt when it is missing.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# The CPU wheel by default (no CUDA libraries in the serving image); a CUDA index for GPU builds.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# 1 for the GPU variant: the build fails unless the installed torch is a CUDA build.
ARG REQUIRE_CUDA=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/shoprec \
    PATH=/opt/shoprec/bin:$PATH

# Python 3.11 in its own virtual environment, whichever base was chosen (CUDA bases ship none).
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           python3.11 python3.11-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 -m venv "$VIRTUAL_ENV"

# torch first, pinned, from the chosen index, so installing the project never swaps it for another
# build; this layer is the big one and changes least.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}" \
    && python -c "import sys, torch; cuda = torch.version.cuda; print('torch', torch.__version__, 'CUDA', cuda); \
sys.exit('REQUIRE_CUDA=1 but this torch is a CPU build' if '${REQUIRE_CUDA}' == '1' and not cuda else 0)"

WORKDIR /app
# Only what the package needs to install (see .dockerignore): no tests, data or home folders.
COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
COPY serving/ serving/
RUN pip install . \
    # recbole ships MovieLens-100K; its own pins conflict with the stack, so without deps.
    && pip install --no-deps recbole==1.2.1 \
    && python -c "import shoprec, kfp, feast, kserve, torch, s3fs, shoprec.kserve.predictor, shoprec.kserve.transformer, shoprec.pipelines.training"

# The Feast definitions, read by the library and by `feast apply` inside the cluster.
COPY feature_repo/ /app/feature_repo/
# On a cluster the shoprec-settings ConfigMap adds SHOPREC_FEAST_YAML (the production stores).
# SHOPREC_IMAGE: the image's own reference (set by `make image`), so the deploy step renders
# the InferenceService's transformer on the same image the pipeline runs on.
# SHOPREC_GPU_IMAGE: the CUDA image, so the train step launches PyTorchJob workers on it.
ARG IMAGE_REF=ghcr.io/shoprec/shoprec:0.1.0
ARG GPU_IMAGE_REF=ghcr.io/shoprec/shoprec:0.1.0-gpu
ENV SHOPREC_IMAGE=$IMAGE_REF \
    SHOPREC_GPU_IMAGE=$GPU_IMAGE_REF \
    SHOPREC_FEATURE_REPO=/app/feature_repo \
    SHOPREC_HOME=/var/lib/shoprec \
    HOME=/home/shoprec

# A fixed non-root user (manifests set runAsNonRoot and this uid); the home volume mounts over
# /var/lib/shoprec on a cluster, the folder here only serves a plain `docker run`.
RUN groupadd --system --gid 10001 shoprec \
    && useradd --system --uid 10001 --gid shoprec --create-home --home-dir /home/shoprec shoprec \
    && mkdir -p /var/lib/shoprec && chown shoprec:shoprec /var/lib/shoprec
USER 10001:10001

# KFP sets each component's command; KServe runs `python -m shoprec.kserve.predictor` /
# `python -m shoprec.kserve.transformer`; the PyTorchJob runs `torchrun -m shoprec.training.ddp`.
EXPOSE 8080
CMD ["shoprec", "--help"]
