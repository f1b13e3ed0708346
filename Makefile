# The two commands of the README: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml client/pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test system-deps serve worker

$(STAMP): pyproject.toml client/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q -e './client[pandas,progress]'
	@rm -f $(VENV)/.installed-* && touch $@

# Debian packages the tests need: Chromium for Playwright (fonts for screenshots), Orthanc with its
# DICOMweb plugin for the DICOMweb sync tests (they start their own server on loopback).
SYSTEM_PACKAGES := chromium fonts-liberation orthanc orthanc-dicomweb
system-deps:
	@{ command -v chromium && ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES); \
	  else echo "install Debian's $(SYSTEM_PACKAGES) (sudo apt-get install $(SYSTEM_PACKAGES))"; exit 1; fi; }

demo: $(STAMP)
	$(BIN)/qcloop db upgrade
	$(BIN)/qcloop demo
	$(BIN)/qcloop serve --with-worker

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)
