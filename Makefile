# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv (scripts/install.sh) on first use and skip that step afterwards,
# unless pyproject.toml, constraints.txt or the install script changed.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := out/demo

.PHONY: demo test env bench clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p $(DEMO)
	$(VENV)/bin/evaluate-agent examples/cartpole_dsqn.pt examples/cartpole_dqn.pt examples/cartpole_if_dsqn.pt \
		--episodes 10 --json $(DEMO)/eval.json

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) out
