# Two entry points: `make demo` and `make test`. Everything else is a prerequisite they pull in.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
NATS_SERVER := /usr/sbin/nats-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-fleet test screenshot bench fuzz soak venv browser nats-server clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m compileall -q supervisor twisted/plugins
	touch $(STAMP)

# Browser tests drive Debian's chromium (Chinese labels need a CJK font to render);
# the dashboard's pure-logic tests run under node's built-in test runner.
browser:
	@missing=""; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The fleet's tests run a real nats-server (Debian's package).
nats-server:
	@if [ ! -x $(NATS_SERVER) ] && ! command -v nats-server >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nats-server; \
	fi

test: venv browser nats-server
	$(PY) -m pytest -q

# The README's picture, from the end-to-end flow (tests write their screenshots under test-output/).
screenshot: venv browser
	@rm -f test-output/dashboard.png
	$(PY) -m pytest -q tests/browser/test_demo_end_to_end.py
	cp test-output/dashboard.png docs/images/dashboard.png

# Certificates under .local/certs, then the relay, then the demo target; Ctrl-C stops both.
demo: venv
	$(PY) -m supervisor._launch_demo --relay-config etc/demo-relay.yaml \
		--target-config etc/demo-target.yaml --certs .local/certs

# The fleet on this machine: nats-server, three host relays (alpha, beta, gamma) with their
# demo targets, then the fleet gateway's dashboard at https://localhost:9543; Ctrl-C stops all.
demo-fleet: venv nats-server
	$(PY) -m supervisor._launch_fleet_demo --gateway-config etc/fleet-gateway.yaml \
		--relay-config etc/demo-relay.yaml --target-config etc/demo-target.yaml \
		--certs .local/certs --fleet .local/fleet --logs .local/logs

# The package's bytecode is compiled first, as pip does for an installed package: an editable
# checkout under PYTHONDONTWRITEBYTECODE would compile every module at each daemon's start.
bench: venv browser
	@$(PY) -m compileall -q supervisor twisted/plugins
	@rm -f bench/results/*.json
	@for b in bench/bench_*.py; do echo "== $$b" >&2; $(PY) $$b || exit 1; done
	@if [ -f bench/report.py ]; then $(PY) bench/report.py; fi

# Longer hypothesis runs against every listener (IPC, registration, wss).
fuzz: venv
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} $(PY) -m pytest -q -s tests/reliability/test_rel_fuzz.py tests/test_ipc_fuzz.py

# 50 targets, 20 sessions, a command per second; SOAK_MINUTES (default 10) sets the duration.
soak: venv
	$(PY) bench/soak.py --minutes $${SOAK_MINUTES:-10}

clean:
	rm -rf $(VENV) build dist *.egg-info .local test-output
