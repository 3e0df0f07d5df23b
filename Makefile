# Two commands for a new user: `make demo` and `make test`. Both build .venv on first use.
# `make serve` opens the web app (groundkit serve) on http://127.0.0.1:7860/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo serve test install clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: a local CPU wheel here; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	# the test extra holds the demo extra's packages (FastAPI, uvicorn) and Playwright for the browser test,
	# which drives Debian's chromium (/usr/bin/chromium: apt-get install chromium; .ci/run does)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/groundkit demo

serve: $(STAMP)
	$(VENV)/bin/groundkit serve

test: $(STAMP)
	$(VENV)/bin/ruff check groundkit tests benchmarks
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs report
