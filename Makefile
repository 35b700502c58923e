# `make run` and `make test` set everything up on a fresh Debian machine: system packages (lua5.4, bubblewrap,
# DCMTK, Orthanc for the peer tests and benchmarks, wrk, PostgreSQL for the tests of the PostgreSQL index),
# a virtualenv, the Python packages.
VENV    := .venv
PY      := $(VENV)/bin/python
CONFIG  ?=
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# pytest-xdist workers of `make test`: twice the cores, because most tests wait on processes and sockets
# (on 2 cores, 4 workers ran a 400-test subset in 145 s, 2 workers in 176 s). `make test JOBS=0`: serial, no workers.
JOBS    ?= $(shell echo $$(( $$(nproc) * 2 )))
# command:package pairs checked on PATH
SYSTEM_PACKAGES := lua5.4:lua5.4 storescu:dcmtk Orthanc:orthanc bwrap:bubblewrap prlimit:util-linux wrk:wrk \
                   pg_ctlcluster:postgresql

.PHONY: setup system-packages run test bench scale-demo clean

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin" command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: setup
	$(PY) -m broker.cli $(CONFIG)

# The suite runs on both back ends of the index (docs/postgresql.md): whole on SQLite, then the tests that
# open an index again with it in PostgreSQL (LUABROKER_TEST_INDEX). `make test INDEXES=sqlite`: the first only.
INDEXES ?= sqlite postgresql
test: setup
	$(PY) -m ruff check . && $(PY) -m mypy
	PATH="$$PATH:/usr/sbin" $(PY) -m pytest -q -n $(JOBS)
	if echo "$(INDEXES)" | grep -qw postgresql; then \
	  LUABROKER_TEST_INDEX=postgresql PATH="$$PATH:/usr/sbin" $(PY) -m pytest -q -n $(JOBS) tests/broker tests/integration tests/security; \
	fi

# every row of issue 12 against Orthanc, table into docs/benchmarks.md; options: make bench BENCH="--rows http --rounds 5"
bench: setup
	PATH="$$PATH:/usr/sbin" $(PY) -m bench.run $(BENCH)

# three brokers on one PostgreSQL (started from Debian's package in a temporary folder), an ingest spread
# over them, where each instance and event went (docs/postgresql.md); make scale-demo DEMO="--count 300"
scale-demo: setup
	PATH="$$PATH:/usr/sbin" $(PY) -m bench.nodes demo $(DEMO)

clean:
	rm -rf $(VENV) luabroker-data .pytest_cache
