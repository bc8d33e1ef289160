# MetaProfile: the two README commands and their helpers.
#   make demo   set up both environments, then run the main job on the demo data
#   make test   set up both environments, then run the test suite
# Everything is written under .work/ (ignored): virtual environments, data, caches,
# Airflow home, Spark scratch space and pytest's temporary files.

SHELL := /bin/bash
PYTHON ?= python3.11
WORK := $(CURDIR)/.work
JOBS_VENV := $(WORK)/venv-jobs
AIRFLOW_VENV := $(WORK)/venv-airflow
# GPU hosts: make <target> TF_DIST='tensorflow[and-cuda]'
TF_DIST ?= tensorflow-cpu
TF_VERSION := 2.21.0
BOOTSTRAP := pip==25.3 setuptools==84.2.1 wheel==0.48.0

export METAPROFILE_WORK_DIR := $(WORK)
export AIRFLOW_HOME := $(WORK)/airflow
export KERAS_HOME := $(WORK)/keras
export MPLCONFIGDIR := $(WORK)/matplotlib
export XDG_CACHE_HOME := $(WORK)/cache
export PIP_CACHE_DIR := $(WORK)/cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export SPARK_LOCAL_DIRS := $(WORK)/spark-local
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(JOBS_VENV)/bin/python
export PYSPARK_DRIVER_PYTHON := $(JOBS_VENV)/bin/python
export METAPROFILE_AIRFLOW_PYTHON := $(AIRFLOW_VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test bench lock clean help

help:
	@echo "make demo    set up and run the main job on the demo data"
	@echo "make test    set up and run the tests"
	@echo "make bench   run the benchmarks in bench/"
	@echo "make lock    re-resolve requirements/*.in into requirements/*.lock"
	@echo "make clean   remove .work/ (environments, data, caches)"

setup: $(JOBS_VENV)/.installed $(AIRFLOW_VENV)/.installed

$(JOBS_VENV)/.installed: requirements/jobs.lock setup.py
	@echo "== job environment ($(TF_DIST)==$(TF_VERSION)) -> $(JOBS_VENV)"
	@rm -rf $(JOBS_VENV)
	$(PYTHON) -m venv $(JOBS_VENV)
	$(JOBS_VENV)/bin/pip install --quiet $(BOOTSTRAP)
	$(JOBS_VENV)/bin/pip install --quiet -r requirements/jobs.lock "$(TF_DIST)==$(TF_VERSION)"
	$(JOBS_VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(AIRFLOW_VENV)/.installed: requirements/airflow.lock
	@echo "== Airflow environment -> $(AIRFLOW_VENV)"
	@rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet $(BOOTSTRAP)
	$(AIRFLOW_VENV)/bin/pip install --quiet -r requirements/airflow.lock
	@touch $@

demo: setup
	$(JOBS_VENV)/bin/metaprofile demo

test: setup
	$(JOBS_VENV)/bin/python -m pytest

bench: setup
	$(JOBS_VENV)/bin/python bench/bench_generate.py

lock:
	@for env in jobs airflow; do \
	  rm -rf $(WORK)/lock-$$env && $(PYTHON) -m venv $(WORK)/lock-$$env && \
	  $(WORK)/lock-$$env/bin/pip install --quiet $(BOOTSTRAP) && \
	  extra=$$([ $$env = jobs ] && echo "tensorflow-cpu==$(TF_VERSION)") && \
	  $(WORK)/lock-$$env/bin/pip install --quiet -r requirements/$$env.in $$extra && \
	  $(WORK)/lock-$$env/bin/pip freeze | grep -v -i '^tensorflow[-_]cpu==' > requirements/$$env.lock && \
	  rm -rf $(WORK)/lock-$$env; \
	done

clean:
	rm -rf $(WORK)
