# The two commands: `make demo` and `make test`. Both set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PGBIN  ?= /usr/lib/postgresql/15/bin
PYTEST_ARGS ?=

.PHONY: install demo test servers bench clean

# torch first, pinned: here 2.13.0 is a CPU build on disk; unpinned, stable-baselines3 pulls a multi-GB CUDA build.
$(BIN)/brain-tasks: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test,bench]"
	@touch $@

install: $(BIN)/brain-tasks

demo: install
	$(BIN)/brain-tasks demo

# Tests start their own throwaway PostgreSQL and Redis; this only makes sure the binaries exist.
servers:
	@if ! command -v redis-server >/dev/null 2>&1 || [ ! -x $(PGBIN)/postgres ] || [ ! -x /usr/sbin/pgbouncer ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing redis-server / postgresql / pgbouncer with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql pgbouncer >/dev/null; \
	  else \
	    echo "The tests need redis-server, PostgreSQL 15 ($(PGBIN)) and pgbouncer: install them, e.g." \
	         "'sudo apt-get install redis-server postgresql pgbouncer', then run 'make test' again."; exit 1; \
	  fi; \
	fi
	@# The dashboard's browser tests drive Debian's chromium (Playwright's own download needs the internet).
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing chromium with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The dashboard's browser tests need /usr/bin/chromium: 'sudo apt-get install chromium'," \
	         "then run 'make test' again."; exit 1; \
	  fi; \
	fi

test: install servers
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install servers
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/embedded.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/stats.py
	$(BIN)/python bench/profile_symbol.py
	$(BIN)/python bench/importance.py
	$(BIN)/python bench/replay_stats.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/ood.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/shap_planted.py
	$(BIN)/python bench/planted_regimes.py
	$(BIN)/python bench/failover.py

clean:
	rm -rf .brain brain.db report .pytest_cache
