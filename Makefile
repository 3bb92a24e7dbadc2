# anycastedge: `make run` serves the repo's zones on the embedded defaults; `make test` runs lint,
# types and the whole suite. Both set up what they need (venv, PyPI and Debian packages) themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBS   := bird2 bind9-dnsutils dnsperf nsd iproute2 procps prometheus openssl systemd zonemaster-cli haproxy
APT_STAMP := $(VENV)/.debs
# nginx's stream module is a separate package (a Recommends, which --no-install-recommends skips).
BENCH_DEBS := nginx libnginx-mod-stream wrk
BENCH_APT_STAMP := $(VENV)/.bench-debs

.PHONY: run test lint unit integration bench fuzz venv debs clean lab

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

# $(call apt_install,PACKAGES): apt-get install those of PACKAGES not installed yet (services are
# not started: policy-rc.d). Needs root, as on CI.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

# Debian packages the tests talk to for real (dig, NSD, dnsperf, BIRD, Zonemaster, HAProxy).
$(APT_STAMP): Makefile | $(STAMP)
	$(call apt_install,$(DEBS))
	touch $@

# Only `make bench` needs these (bench/l4_vs_haproxy.py, bench/l7_vs_haproxy.py: wrk): `make test`
# does not install them (HAProxy is in DEBS: the forward tests run on engine: haproxy too).
$(BENCH_APT_STAMP): Makefile | $(STAMP)
	$(call apt_install,$(BENCH_DEBS))
	touch $@

debs: $(APT_STAMP)

run: $(STAMP)
	@echo "try: dig @127.0.0.1 -p 5300 www.example.com A"
	$(BIN)/anycastedge serve

lint: $(STAMP)
	$(BIN)/ruff check anycastedge tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --cache-dir $(VENV)/.import_linter_cache

# Bytecode caches go to the venv too: the suite checks that it leaves the working tree as found.
test: export PYTHONPYCACHEPREFIX := $(CURDIR)/$(VENV)/pycache
# Two processes, a module each at a time (module fixtures are set up once); then, alone, what
# measures timing across the machine (the lab, the BGP hook's detection time).
test: $(STAMP) $(APT_STAMP) lint
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not exclusive"
	$(BIN)/pytest -q -m exclusive

# The anycast lab (root): routers, POPs and clients in network namespaces (docs/lab.md). It stays
# up for exploring afterwards; `.venv/bin/anycastedge lab down` removes it.
lab: $(STAMP) $(APT_STAMP)
	$(BIN)/anycastedge lab up
	$(BIN)/anycastedge lab test

bench: $(STAMP) $(APT_STAMP) $(BENCH_APT_STAMP)
	$(BIN)/python bench/dns_vs_nsd.py
	$(BIN)/python bench/dns_vs_nsd.py --workers 1,2
	$(BIN)/python bench/dns_udp_sharing.py
	$(BIN)/python bench/gslb_vs_static.py
	$(BIN)/python bench/zone_scale.py
	$(BIN)/python bench/l4_vs_haproxy.py
	$(BIN)/python bench/l7_vs_haproxy.py
	$(BIN)/python bench/soak.py

# Long fuzzing campaigns, 5 minutes per target (docs/fuzzing.md); `make test` runs a short smoke.
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --minutes 5

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
