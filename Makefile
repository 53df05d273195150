# Everyday commands; every Make variable maps to the command-line flag of the
# same name (EPOCHS=5 -> --epochs 5). `make help` lists the targets.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

# Variables passed to `python -m pipeline.train` when set.
TRAIN_VARS := DATASET PROT MODEL EPOCHS BATCH_SIZE LEARNING_RATE SEED DATA_DIR OUT RUN_NAME \
	VAL_FRACTION TRAIN_SAMPLES STRATEGY REPLICAS DEVICE EVALUATIONS

lower = $(shell echo '$(1)' | tr 'A-Z_' 'a-z-')
flags = $(foreach v,$(1),$(if $(value $(v)),--$(call lower,$(v)) $(value $(v))))

.PHONY: help venv demo test lint format train bench-train clean export

help:
	@echo "make demo                      train on the bundled digits set (creates .venv)"
	@echo "make test                      run the test suite (creates .venv)"
	@echo "make train DATASET=mnist PROT=none EPOCHS=50"
	@echo "make bench-train               pipeline.train epoch time against a bare model.fit"
	@echo "make lint | format             ruff"
	@echo "make export TARGET=all DATASET=mnist PROT=none   (or RUN=runs/<name>) -> exports/"

$(STAMP): requirements.lock pyproject.toml
	rm -f $(VENV)/.installed-*
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements.lock
	# Membership-inference attacks; its declared tf-models-official is not needed.
	$(PY) -m pip install --quiet --no-deps tensorflow-empirical-privacy==0.1.0
	touch $@

venv: $(STAMP)

demo: venv
	$(PY) -m pipeline.train --dataset digits --epochs 20 $(call flags,$(filter-out DATASET EPOCHS,$(TRAIN_VARS)))

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

train: venv
	$(PY) -m pipeline.train $(call flags,$(TRAIN_VARS))

bench-train: venv
	$(PY) benchmarks/bench_train.py $(call flags,DATASET DATA_DIR EPOCHS BATCH_SIZE TRAIN_SAMPLES)

clean:
	rm -rf runs results report exports

# Export a trained run (RUN=runs/<name>, or the DATASET/PROT/OUT/RUN_NAME of `make train`) to
# exports/<run>/<TARGET>/; EXPORTS= changes that folder, QAT=1 adds quantisation-aware training.
EXPORT_VARS := TARGET CALIBRATION CALIBRATION_SAMPLES QAT_EPOCHS ROBUSTNESS_SAMPLES PGD_STEPS \
	EPS DATA_DIR
EXPORT_RUN = $(or $(RUN),$(or $(OUT),runs)/$(or $(RUN_NAME),$(or $(DATASET),digits)-$(or $(PROT),none)))

export: venv
	$(if $(TARGET),,$(error set TARGET= to tflite, tflite-int8, edgetpu, openvino, onnx, tensorrt or all))
	$(PY) -m exporters --run $(EXPORT_RUN) --out $(or $(EXPORTS),exports) \
		$(call flags,$(EXPORT_VARS)) $(if $(filter 1 yes true,$(QAT)),--qat)
