# shoprec: `make run` sets up and runs the training pipeline; `make test` sets up and runs the tests.
# The environment lives in .venv and is rebuilt only when pyproject.toml changes.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# pip's machine config points at optional local indexes that may be absent: keep the log readable.
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
QUIET := 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: run test setup setup-dev benchmark compile image image-gpu clean-env help

help:
	@echo "make run    - set up .venv and run the training pipeline on Instacart (kfp.local)"
	@echo "make test   - set up .venv with dev tools and run the test suite"
	@echo "make benchmark - run every benchmark in benchmarks/ (tables on stdout)"
	@echo "make image  - build the container image (IMAGE=... or \$$SHOPREC_IMAGE; needs Docker)"
	@echo "make image-gpu - build the CUDA image of the GPU steps (GPU_IMAGE=... or \$$SHOPREC_GPU_IMAGE)"

# The stamp depends on pyproject.toml: a second call with no change reuses the environment.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing torch (CPU wheel) first, then the project"
	@$(PIP) install torch==2.13.0 $(QUIET)
	@$(PIP) install -e . $(QUIET)
	@# recbole ships MovieLens-100K; its own dependency pins conflict with the stack, so no deps.
	@$(PIP) install --no-deps recbole==1.2.1 $(QUIET)
	@$(BIN)/python -c "import shoprec, kfp, feast, great_expectations, evidently, kserve, torch" \
		|| (echo "[setup] import check failed" && exit 1)
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	@$(PIP) install -e ".[dev]" $(QUIET)
	@touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

run: setup
	$(BIN)/shoprec run $(ARGS)

# tests/services.sh installs redis-server when missing and starts a throwaway one for the
# online-store tests; it is stopped whatever pytest's result, and pytest's status is kept.
test: setup-dev
	@bash tests/services.sh start
	@status=0; SHOPREC_REQUIRE_REDIS=1 $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
		bash tests/services.sh stop; exit $$status

# Every benchmark prints its figures as a table; the quality one trains for minutes
# (QUALITY_ARGS="--datasets ml-100k ml-1m --budget-minutes 28" for the headline run).
QUALITY_ARGS ?= --datasets ml-100k --budget-minutes 8
benchmark: setup-dev
	$(BIN)/python benchmarks/validation.py
	@bash tests/services.sh start
	@status=0; $(BIN)/python benchmarks/features.py || status=$$?; bash tests/services.sh stop; exit $$status
	$(BIN)/python benchmarks/serving.py --demo $$(mktemp -d)
	$(BIN)/python benchmarks/monitoring.py
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/quality.py $(QUALITY_ARGS)
	$(BIN)/python benchmarks/repeat_head.py

compile: setup
	$(BIN)/shoprec compile

# The image every component and server runs: $SHOPREC_IMAGE, else shoprec.config.DEFAULT_IMAGE
# (the name the compiled pipelines record). `make compile` after a new name records it there too.
IMAGE ?= $(or $(SHOPREC_IMAGE),$(shell sed -n 's/^DEFAULT_IMAGE = "\(.*\)"/\1/p' src/shoprec/config.py))
# The CUDA build for the steps that request a GPU (train, PyTorchJob workers): $SHOPREC_GPU_IMAGE,
# else IMAGE with a -gpu tag suffix (shoprec.config.resolve_gpu_image gives the same name).
GPU_IMAGE ?= $(or $(SHOPREC_GPU_IMAGE),$(IMAGE)-gpu)
CUDA_BASE ?= nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
CUDA_TORCH_INDEX ?= https://download.pytorch.org/whl/cu128
# A docker CLI is not enough: the engine must answer.
DOCKER_OK = docker info >/dev/null 2>&1 || { echo "[image] no Docker engine answers here (docker info" \
	"failed): build on a machine with Docker: docker build -t $(IMAGE) ."; exit 2; }

# Both builds record both names (SHOPREC_IMAGE, SHOPREC_GPU_IMAGE), so a step on either image
# renders CPU servers on the CPU image and PyTorchJob workers on the CUDA one.
image:
	@$(DOCKER_OK)
	docker build --build-arg IMAGE_REF=$(IMAGE) --build-arg GPU_IMAGE_REF=$(GPU_IMAGE) -t $(IMAGE) .

# The same Dockerfile on a CUDA base with the CUDA torch wheel; REQUIRE_CUDA=1 fails the build
# when the installed torch is a CPU build, so a GPU step can never get a CPU-only image.
image-gpu:
	@$(DOCKER_OK)
	docker build --build-arg BASE_IMAGE=$(CUDA_BASE) --build-arg TORCH_INDEX_URL=$(CUDA_TORCH_INDEX) \
		--build-arg REQUIRE_CUDA=1 --build-arg IMAGE_REF=$(IMAGE) --build-arg GPU_IMAGE_REF=$(GPU_IMAGE) \
		-t $(GPU_IMAGE) .

clean-env:
	rm -rf $(VENV)
