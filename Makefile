# Two commands set everything up on a fresh machine:
#   make serve   install what is missing, run the service (embedded: no Redis, SQLite, ./data)
#   make test    install what is missing, start Redis if needed, run the test suite
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST    ?= 127.0.0.1
PORT    ?= 8000

.PHONY: install serve worker test test-engine test-service bench bench-service docker compose clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0          # the CPU wheel first: an unpinned torch pulls CUDA
	$(PY) -m pip install -q --no-deps torchvision==0.28.0  # model code for torchvision:NAME and timm (its deps would pull another torch)
	$(PY) -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/prunekit serve --host $(HOST) --port $(PORT)

worker: install
	$(VENV)/bin/prunekit worker

test: install
	@eval "$$(scripts/ensure-services.sh)" && $(PY) -m pytest -q

test-engine: install
	$(PY) -m pytest -q --ignore=tests/service

test-service: install
	@eval "$$(scripts/ensure-services.sh)" && $(PY) -m pytest -q tests/service

bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/engine.py && $(PY) bench/recurrent.py

bench-service: install
	$(PY) bench/service.py

docker:
	docker build -t prunekit .

compose:
	docker compose up --build

clean:
	rm -rf $(VENV) data .pytest_cache
