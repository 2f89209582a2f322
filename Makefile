# make setup | demo | test | unit | integration | bench | lint | clean
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
STAMP  := $(VENV)/.installed
# FAUCET, the convergence benchmark's peer, in a virtualenv of its own (its pins are not ours).
FAUCET := .venv-faucet/bin/faucet

.PHONY: setup demo test unit integration bench lint clean

setup:
	@bash scripts/setup.sh

$(STAMP): pyproject.toml scripts/setup.sh setup.py nfv/datapath/_fast.c sdn/compile/_routes.c
	@bash scripts/setup.sh

# pytest exits 5 when it collected no tests: that must fail, never pass quietly.
define run_pytest
	@$(PYTEST) $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc
endef

demo: setup
	$(PY) scripts/demo.py

test: setup lint
	$(call run_pytest,-ra tests)

unit: $(STAMP)
	$(call run_pytest,-ra tests/unit)

integration: setup
	$(call run_pytest,-ra tests/integration)

bench: setup $(FAUCET)
	$(PY) -m bench

$(FAUCET):
	python3 -m venv .venv-faucet
	.venv-faucet/bin/pip install -q faucet==1.10.12

lint: $(STAMP)
	$(VENV)/bin/ruff check sdn nfv common testing topologies tests bench scripts
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .venv-faucet .pytest_cache .ruff_cache results build *.egg-info nfv/datapath/*.so
