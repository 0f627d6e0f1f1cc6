# nwp500d — developer entry points. `make test` works on a fresh Debian machine: as root it installs the
# Debian packages the suites need, then builds .venv and runs ruff, mypy --strict and pytest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEB_PACKAGES := mosquitto openssl chromium systemd-journal-remote libsystemd-dev pkg-config gcc nftables conntrack iproute2

.PHONY: test lint typecheck unit demo bench deps venv clean

test: deps venv lint typecheck
	$(BIN)/pytest -q

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "not root: cannot install$$missing (tests that need them will skip; building systemd-python needs libsystemd-dev)"; \
	  fi; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,sim]'
	touch $@

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

demo: deps venv
	$(BIN)/nwp500d demo

bench: venv
	$(BIN)/python bench/collector.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info

# Install as a systemd service (root): venv in /opt/nwp500d, units, sysusers, journal catalog, man page, example
# config. DESTDIR=DIR stages everything below DIR without touching the host; PURGE=1 also deletes config and state.
.PHONY: install uninstall

install:
	bash packaging/install.sh $(if $(DESTDIR),--root "$(DESTDIR)")

uninstall:
	bash packaging/uninstall.sh $(if $(DESTDIR),--root "$(DESTDIR)") $(if $(PURGE),--purge)
