# The book's two commands:
#   make book   build the website into _build/html
#   make test   run every test (unit, notebooks in the smoke profile, site)
# and the one that regenerates a chapter's stored outputs:
#   make execute NB=notebooks/03_cnn.ipynb
# Everything runs inside .venv, created from requirements.txt on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
ASSETS_STAMP := book/vendor/.installed
JOBS ?= 2

# TORCH=cpu, when .venv is made: PyTorch's CPU-only build, from PyTorch's own
# index, instead of PyPI's torch, which on Linux is the CUDA build (several GB).
TORCH ?=
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
ifneq ($(filter-out cpu,$(TORCH)),)
$(error TORCH must be cpu or unset, not '$(TORCH)')
endif

# SITE=no: every test but the site tests (tests/test_site.py), for a machine
# without Chromium: make test SITE=no
SITE ?= yes
ifeq ($(filter yes no,$(SITE)),)
$(error SITE must be yes or no, not '$(SITE)')
endif
SITE_ARGS := $(if $(filter no,$(SITE)),--ignore=tests/test_site.py)

.PHONY: help venv assets data book preflight test test-unit test-notebooks test-site execute student clean

help:
	@echo "make book                           build the website into _build/html"
	@echo "make test                           run every test (smoke profile); SITE=no: all but the site tests"
	@echo "make test-unit                      dlbook's unit tests only"
	@echo "make test-notebooks                 the notebooks only (smoke profile)"
	@echo "make test-site                      the site tests only (builds the book first)"
	@echo "make data                           verify the data folder, downloading what is missing"
	@echo "make execute NB=notebooks/X.ipynb   regenerate a chapter's stored outputs (full profile)"
	@echo "make student [NB=notebooks/X.ipynb] write student versions (no solutions, no outputs) to student/"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt pyproject.toml dlbook/_version.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH),$(PY) -m pip install --quiet --index-url $(TORCH_CPU_INDEX) "$$(grep -E '^torch==' requirements.txt)")
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

assets: $(ASSETS_STAMP)

$(ASSETS_STAMP): tools/assets/package.json tools/assets/package-lock.json tools/vendor_assets.py | $(VENV_STAMP)
	npm ci --prefix tools/assets --ignore-scripts --no-audit --no-fund --loglevel=error
	$(PY) tools/vendor_assets.py
	touch $@

# The data sets, in DLBOOK_DATA (else ~/.cache/dlbook): what is there is
# verified, what is missing downloaded. Every test target runs it first.
data: venv
	$(PY) -m dlbook.data fetch --all

book: venv assets
	rm -rf _build/html _build/.doctrees
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --quiet
	@du -sh _build/html | sed 's/^/site size: /'

# What the tests need beyond the venv (Chromium, a CJK font), checked before anything is built.
preflight:
	@$(PYTHON) tools/run_tests.py --preflight $(SITE_ARGS)

test: preflight data book
	DLBOOK_PROFILE=smoke $(PY) tools/run_tests.py -n $(JOBS) $(SITE_ARGS)

test-unit: venv data
	DLBOOK_PROFILE=smoke $(PY) tools/run_tests.py tests --ignore=tests/test_site.py

test-notebooks: venv data
	DLBOOK_PROFILE=smoke $(PY) tools/run_tests.py -n $(JOBS) notebooks

test-site: preflight book
	$(PY) tools/run_tests.py tests/test_site.py

# Rewrites the notebook and results/<slug>.json, both tracked: run it on an idle machine.
execute: venv
	@test -n "$(NB)" || (echo "usage: make execute NB=notebooks/03_cnn.ipynb" && exit 2)
	$(PY) tools/execute.py $(NB)

# Every chapter, or only NB, into student/.
student: venv
	$(PY) tools/student.py $(or $(NB),notebooks/[0-9][0-9]_*.ipynb) -o student/

clean:
	rm -rf _build student test-artifacts book/vendor
