# Everyday commands; every Make variable maps to the command-line flag of the
# same name (EPOCHS=5 -> --epochs 5). `make help` lists the targets.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

# Variables passed to `python -m pipeline.train` when set.
TRAIN_VARS := DATASET PROT MODEL EPOCHS BATCH_SIZE LEARNING_RATE SEED DATA_DIR OUT RUN_NAME \
	VAL_FRACTION TRAIN_SAMPLES STRATEGY REPLICAS DEVICE EVALUATIONS
# PROT=he (docs/he.md)
TRAIN_VARS += POLY_MODULUS_DEGREE COEFF_MOD_BIT_SIZES GLOBAL_SCALE_BITS HE_HIDDEN_UNITS HE_SAMPLES
# PROT=anomaly (docs/anomaly.md)
TRAIN_VARS += FILTER FEATURES CONTAMINATION SCORE_THRESHOLD N_ESTIMATORS INJECT INJECT_RATE \
	OOD_SOURCE BRIEF_EPOCHS REFERENCE_MODELS COMPARE
# PROT=adv, PROT=adv-retrain (docs/adversarial.md)
TRAIN_VARS += ATTACK ADV_EPS ADV_RATIO PGD_STEPS PGD_STEP_SIZE RETRAIN_EPOCHS
# PROT=dp (docs/dp.md)
TRAIN_VARS += L2_NORM_CLIP NOISE_MULTIPLIER EPSILON DELTA DP_IMPL SAMPLING MICROBATCHES

lower = $(shell echo '$(1)' | tr 'A-Z_' 'a-z-')
flags = $(foreach v,$(1),$(if $(value $(v)),--$(call lower,$(v)) $(value $(v))))

.PHONY: help venv demo test lint format train bench-train clean bench-dp

.PHONY: help venv demo test lint format train bench-train clean export

help:
	@echo "make demo                      the whole experiment on the bundled digits set, ending with report/index.html"
	@echo "make test                      run the test suite (creates .venv)"
	@echo "make train DATASET=mnist PROT=none EPOCHS=50"
	@echo "make bench-train               pipeline.train epoch time against a bare model.fit"
	@echo "make lint | format             ruff"
	@echo "make bench-dp                  DP-SGD epoch time over plain SGD (BENCH_DP_ARGS=--accuracy)"

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

# The whole experiment on the bundled digits set, ending with report/index.html.
demo: demo-grid

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

.PHONY: bench-he
bench-he: venv
	$(PY) benchmarks/bench_he.py $(call flags,DATASET DATA_DIR EPOCHS POLY_MODULUS_DEGREE COEFF_MOD_BIT_SIZES GLOBAL_SCALE_BITS HE_HIDDEN_UNITS)

# --- the whole experiment and its report (docs/report.md) ---------------------------------
# make grid DATASETS="mnist cifar10" PROTS="none dp adv adv-retrain anomaly he" EPOCHS=50
# Every TRAIN_VARS variable but DATASET, PROT and RUN_NAME is passed to every run.
GRID_VARS := DATASETS PROTS TARGETS STEPS EXPORTS RESULTS REPORT BENCH_LIMIT
DEMO_PROTS ?= none dp adv adv-retrain anomaly he
DEMO_EPOCHS ?= 10

.PHONY: grid report demo-grid

grid: venv
	$(PY) -m pipeline.grid $(call flags,$(GRID_VARS)) $(call flags,$(filter-out DATASET PROT RUN_NAME,$(TRAIN_VARS)))

report: venv
	$(PY) -m pipeline.report $(if $(OUT),--runs $(OUT)) $(call flags,RUNS EXPORTS RESULTS REPORT)

# The grid on the bundled digits set, a few minutes on a 2-core CPU, ending with report/index.html.
demo-grid: venv
	$(PY) -m pipeline.grid --datasets digits --prots $(DEMO_PROTS) --epochs $(DEMO_EPOCHS) $(call flags,$(filter-out DATASETS PROTS EPOCHS,$(GRID_VARS))) $(call flags,$(filter-out DATASET PROT RUN_NAME EPOCHS,$(TRAIN_VARS)))

.PHONY: bench-anomaly
bench-anomaly: venv
	$(PY) benchmarks/bench_anomaly.py $(call flags,DATASET DATA_DIR INJECT_RATE CONTAMINATION \
		N_ESTIMATORS BRIEF_EPOCHS REFERENCE_MODELS SEED)

.PHONY: bench-devices
bench-devices: venv  ## board runner against bare runtime loops and OpenVINO's benchmark_app
	$(PY) benchmarks/bench_devices.py $(call flags,DATASET DATA_DIR EPOCHS)

# Adversarial training: epoch-time ratios (MLP on MNIST, CNN on CIFAR-10); EFFECTIVENESS=1 also
# trains a plain and an adversarial MNIST MLP and attacks both with 40-step PGD.
.PHONY: bench-adv
bench-adv: venv
	$(PY) benchmarks/bench_adv.py $(call flags,DATA_DIR BATCH_SIZE PGD_STEPS) \
		$(if $(EFFECTIVENESS),--effectiveness)


bench-dp: venv
	$(PY) benchmarks/bench_dp.py $(BENCH_DP_ARGS)

# Export a trained run (RUN=runs/<name>, or the DATASET/PROT/OUT/RUN_NAME of `make train`) to
# exports/<run>/<TARGET>/; EXPORTS= changes that folder, QAT=1 adds quantisation-aware training.
EXPORT_VARS := TARGET CALIBRATION CALIBRATION_SAMPLES QAT_EPOCHS ROBUSTNESS_SAMPLES PGD_STEPS \
	EPS DATA_DIR
EXPORT_RUN = $(or $(RUN),$(or $(OUT),runs)/$(or $(RUN_NAME),$(or $(DATASET),digits)-$(or $(PROT),none)))

export: venv
	$(if $(TARGET),,$(error set TARGET= to tflite, tflite-int8, edgetpu, openvino, onnx, tensorrt or all))
	$(PY) -m exporters --run $(EXPORT_RUN) --out $(or $(EXPORTS),exports) \
		$(call flags,$(EXPORT_VARS)) $(if $(filter 1 yes true,$(QAT)),--qat)
