# remote-kernels: set-up, test cluster, demo and tests.  Run as root on Debian (but `make unit`:
# any user, in a checkout of their own).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= /usr/bin/python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PKGS := slurm-wlm slurmdbd mariadb-server munge openssh-server tcsh libpam-slurm-adopt python3.11-venv iproute2 util-linux passwd chromium chromium-driver tcpdump \
	gridengine-master gridengine-exec gridengine-client
CLUSTER := /usr/bin/python3 tests/cluster/cluster.py
SGE := /usr/bin/python3 tests/cluster/sge.py

.PHONY: help deps venv labext hub-proxy cluster cluster-down cluster-status demo unit test docs bench dist

help:
	@echo "make demo            set up everything, run a cell on a compute node"
	@echo "make unit            the unit tier: no root, no cluster (makes .venv if missing; < 1 min)"
	@echo "make test            set up everything, run the unit tier, then the cluster suite"
	@echo "make bench           benchmark a compute-node kernel against a local one (~6 min)"
	@echo "make docs            build the documentation (warnings are errors)"
	@echo "make dist            build the wheel and the sdist into dist/ (to install on a cluster)"
	@echo "make cluster         bring up (or repair) the test cluster"
	@echo "make cluster-down    stop and remove the test cluster"
	@echo "make cluster-status  show the test cluster's daemons and nodes"

# Debian packages; apt runs only when something is missing.
deps:
	@missing=$$(for p in $(APT_PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The JupyterLab extension (labextension/, TypeScript), prebuilt into remote_kernels/labextension/,
# which the wheel installs under share/jupyter/labextensions/: users need no Node.  Node 20 and npm
# (the registry) build it, from package-lock.json; rebuilt only when its sources change.
LABEXT_OUT := remote_kernels/labextension/package.json
LABEXT_DEPS := labextension/node_modules/.package-lock.json
LABEXT_SRC := $(wildcard labextension/src/*.ts labextension/style/*) labextension/package.json labextension/tsconfig.json
labext: $(LABEXT_OUT)
$(LABEXT_DEPS): labextension/package.json labextension/package-lock.json
	@command -v npm >/dev/null || { echo "building the JupyterLab extension needs Node.js 20+ and npm" >&2; exit 1; }
	cd labextension && npm ci --no-audit --no-fund --loglevel=error
	touch $(LABEXT_DEPS)
$(LABEXT_OUT): $(LABEXT_SRC) $(LABEXT_DEPS)
	cd labextension && npm run --silent build
	touch $(LABEXT_OUT)

# The test bed's JupyterHub proxy (tests/test_hub_browser.py): configurable-http-proxy from npm,
# from tests/hub/package-lock.json; `npm ci` runs only when the lock changes.
HUB_PROXY := tests/hub/node_modules/.package-lock.json
hub-proxy: $(HUB_PROXY)
$(HUB_PROXY): tests/hub/package.json tests/hub/package-lock.json
	@command -v npm >/dev/null || { echo "the test hub's proxy needs Node.js 20+ and npm" >&2; exit 1; }
	cd tests/hub && npm ci --no-audit --no-fund --loglevel=error
	touch $(HUB_PROXY)

# The venv: Python packages only (pip, from the registry), so the checkout's owner can make it
# without root.  Debian's python3.11 (with python3.11-venv, which `deps` installs) is readable
# by all; root's own Python may not be.
$(STAMP): pyproject.toml $(LABEXT_OUT) jupyter-config/jupyter_server_config.d/remote_kernels.json
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "$(PYTHON) cannot make a venv: install python3.11-venv" \
	    "(as root: make deps), or set PYTHON= to a Python 3.9+ that can" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Debian packages first: the venv needs python3.11-venv.
venv: deps
	@$(MAKE) --no-print-directory $(STAMP)

cluster: deps
	$(CLUSTER) up
	$(SGE) up

cluster-down:
	-$(SGE) down
	$(CLUSTER) down

cluster-status:
	@$(CLUSTER) status; $(SGE) status

demo: venv cluster
	$(VPY) -m remote_kernels.demo

# Warnings are errors: a broken link, toctree entry or cross-reference fails the build.
docs: venv
	$(VPY) -m sphinx -W --keep-going -b html docs docs/_build/html

# The wheel carries the launcher and the example kernelspecs (remote_kernels/kernelspecs/).
# Only Python is needed (no apt packages, no test cluster): the builder gets its own small venv.
DIST_VENV := .venv-dist
dist: labext
	test -x $(DIST_VENV)/bin/python || $(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install -q 'build>=1'
	rm -rf dist
	$(DIST_VENV)/bin/python -m build --outdir dist .

# Two tiers (tests/conftest.py marks every test that uses the cluster fixture `cluster`).  The
# unit tier needs no root, no cluster and none of its packages: parsers, script rendering,
# options, CLI files, the stand-in, docs against the code.
unit: $(STAMP)
	$(VPY) -m pytest -m "not cluster" tests

# The unit tier first (fast feedback), then the cluster suite.
test: venv hub-proxy unit cluster docs
	$(VPY) -m pytest -m cluster --durations=25 tests

# The benchmark's kernelspec lives in the venv; --replace keeps it current.
bench: venv cluster
	$(VPY) -m pip install -q -e '.[bench]'
	$(VPY) -m remote_kernels install rk-bench --display-name "Python 3 (compute node, bench)" --sys-prefix --replace >/dev/null
	$(VPY) -m remote_kernels install rk-bench-shared --display-name "Python 3 (compute node, bench, shared)" \
	    --allocation shared --sys-prefix --replace >/dev/null
	$(VPY) -m remote_kernels install rk-bench-direct --display-name "Python 3 (compute node, bench, direct)" \
	    --transport direct --sys-prefix --replace >/dev/null
	$(VPY) benchmarks/bench.py $(BENCH_ARGS)
