# Every target creates (once) and reuses the virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MLFLOW_DB ?= $(CURDIR)/mlflow.db
UI_PORT ?= 5000
# quiet TensorFlow's C++ start-up chatter; no usage pings from MLflow
export TF_CPP_MIN_LOG_LEVEL ?= 2
export MLFLOW_DISABLE_TELEMETRY ?= true
SERVER_PORT ?= 5001

.DEFAULT_GOAL := help
.PHONY: help demo test test-fast lint mutate ui server clean reset

# Said once, since pip -q is silent for the minutes a first install takes; nothing is
# printed when the environment is up to date.
$(VENV)/.installed: pyproject.toml
	@echo "[resnet-exp] installing TensorFlow, MLflow, Hydra and the rest into $(VENV)" \
		"(the first time: about 3 minutes and 2 GB; again only when pyproject.toml changes)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e ".[dev]"
	@touch $@
	@echo "[resnet-exp] $(VENV) is ready"

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) \
		| sed -e 's/$$(UI_PORT)/$(UI_PORT)/g' -e 's/$$(SERVER_PORT)/$(SERVER_PORT)/g' \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

demo: $(VENV)/.installed ## the default study (depth_sweep on digits, in parallel), then its figures
	$(PY) experiments/train.py -m experiment=depth_sweep hydra/launcher=joblib
	$(PY) scripts/make_figures.py --experiment depth_sweep

# The fast tests in parallel processes (pytest-xdist: one per core, at most 4); the slow ones
# two at a time: each runs parallel jobs or servers of its own, and many mostly wait (servers,
# Slurm's queue), so two overlap well on 2 cores. The Slurm tests share one node and run one
# after another on one worker (xdist group `slurm`).
FAST_TESTS := -m "not slow" -n auto --maxprocesses=4
SLOW_TESTS := -m slow -n 2 --dist loadgroup

test: $(VENV)/.installed ## the whole test suite, slow end-to-end tests included
	$(PY) -m pytest $(FAST_TESTS)
	$(PY) -m pytest $(SLOW_TESTS)

test-fast: $(VENV)/.installed ## the tests not marked slow
	$(PY) -m pytest $(FAST_TESTS)

# mutmut's results stay in mutants/; MUTANTS='resnet_exp.training.optim.*' (re)tests one module
MUTANTS ?=

$(VENV)/.mutation-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev,mutation]"
	touch $@

mutate: $(VENV)/.mutation-installed ## mutation testing of the measurement modules (mutmut; hours on 2 cores, resumable)
	$(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut export-cicd-stats
	@$(VENV)/bin/mutmut results

lint: $(VENV)/.installed ## ruff lint and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

ui: $(VENV)/.installed ## the MLflow UI on http://127.0.0.1:$(UI_PORT) over ./mlflow.db (prints each study's link)
	@$(PY) scripts/ui_links.py --tracking-uri sqlite:///$(MLFLOW_DB) --url http://127.0.0.1:$(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --host 127.0.0.1 --port $(UI_PORT)

server: $(VENV)/.installed ## a tracking server on http://127.0.0.1:$(SERVER_PORT) (SQLite + served artifacts)
	$(PY) scripts/tracking_server.py --port $(SERVER_PORT)

clean: ## remove Hydra outputs and caches (keeps mlflow.db and the venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache

reset: clean ## start afresh: also delete every logged run (mlflow.db, mlruns, mlartifacts, tracking-server), their checkpoints and reports/
	rm -rf $(MLFLOW_DB) mlruns mlartifacts tracking-server checkpoints reports
