# make run: serve the example project on http://127.0.0.1:8000
# make test: the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TRIAL_ARGS ?= tests

.PHONY: all install test run run-redis redis-server chromium conformance bench docs clean

all: install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# "compat" editable mode puts the checkout on sys.path, so Twisted's plugin
# scan finds twisted/plugins/chanserve_plugin.py (the default import-hook
# mode hides it). Listing the plugins afterwards rewrites dropin.cache.
$(INSTALLED): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; from twisted import plugins; list(getPlugins(IPlugin, plugins))"
	touch $@

install: $(INSTALLED)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# The browser tests drive Debian's Chromium through Selenium.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Django 5.2 (what installs on Python 3.11) in .venv; Django 4.2, the older
# supported LTS, in a second virtualenv that runs the same suite.
VENV42 ?= .venv-django42
BIN42 := $(VENV42)/bin

$(BIN42)/python:
	$(PYTHON) -m venv $(VENV42)
	$(BIN42)/pip install -q --upgrade pip setuptools wheel

$(VENV42)/.installed: $(BIN42)/python setup.cfg pyproject.toml
	$(BIN42)/pip install -q -e '.[test]' 'django>=4.2,<4.3' --config-settings editable_mode=compat
	touch $@

test: install redis-server chromium $(VENV42)/.installed
	$(BIN)/python -b -m twisted.trial --random=0 $(TRIAL_ARGS)
	@$(BIN42)/python -c "import django; print('again with Django', django.get_version())"
	$(BIN42)/python -b -m twisted.trial --random=0 --temp-directory=_trial_temp_django42 $(TRIAL_ARGS)

run: install
	cd example && ../$(BIN)/python manage.py migrate --noinput -v 0
	cd example && ../$(BIN)/twistd -n chanserve --settings example.settings --endpoint tcp:8000:interface=127.0.0.1

run-redis: install redis-server
	bash example/run-redis.sh

conformance: install
	bash conformance/run.sh

bench: install
	bash bench/run.sh

docs: install
	$(BIN)/pip install -q -r docs/requirements.txt
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(VENV42) _trial_temp_django42 build *.egg-info _trial_temp twisted/plugins/dropin.cache
