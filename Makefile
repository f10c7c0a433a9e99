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

.PHONY: help venv assets book preflight test test-unit test-notebooks test-site execute student clean

help:
	@echo "make book                           build the website into _build/html"
	@echo "make test                           run every test (smoke profile)"
	@echo "make execute NB=notebooks/X.ipynb   regenerate a chapter's stored outputs (full profile)"
	@echo "make student [NB=notebooks/X.ipynb] write student versions (no solutions, no outputs) to student/"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt pyproject.toml dlbook/_version.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

assets: $(ASSETS_STAMP)

$(ASSETS_STAMP): tools/assets/package.json tools/assets/package-lock.json tools/vendor_assets.py | $(VENV_STAMP)
	npm ci --prefix tools/assets --ignore-scripts --no-audit --no-fund --loglevel=error
	$(PY) tools/vendor_assets.py
	touch $@

book: venv assets
	rm -rf _build/html _build/.doctrees
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --quiet
	@du -sh _build/html | sed 's/^/site size: /'

# What the tests need beyond the venv (Chromium), checked before anything is built.
preflight:
	@$(PYTHON) tools/run_tests.py --preflight

test: preflight book
	DLBOOK_PROFILE=smoke $(PY) tools/run_tests.py -n $(JOBS)

test-unit: venv
	DLBOOK_PROFILE=smoke $(PY) tools/run_tests.py tests --ignore=tests/test_site.py

test-notebooks: venv
	DLBOOK_PROFILE=smoke $(PY) tools/run_tests.py -n $(JOBS) notebooks

test-site: preflight book
	$(PY) tools/run_tests.py tests/test_site.py

execute: venv
	@test -n "$(NB)" || (echo "usage: make execute NB=notebooks/03_cnn.ipynb" && exit 2)
	$(PY) tools/execute.py $(NB)

# Every chapter, or only NB, into student/.
student: venv
	$(PY) tools/student.py $(or $(NB),notebooks/[0-9][0-9]_*.ipynb) -o student/

clean:
	rm -rf _build student test-artifacts book/vendor
