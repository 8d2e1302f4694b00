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

# The main job on the bundled defaults: the trained CartPole DSQN, exported to NIR, plays
# CartPole on NEST while the reference executor runs beside it on the same observations.
demo: $(STAMP)
	@mkdir -p $(DEMO)
	@rm -f $(DEMO)/nest.jsonl
	$(VENV)/bin/export-nir examples/cartpole_dsqn.pt -o $(DEMO)/cartpole_dsqn.nir
	$(VENV)/bin/run-backend --target nest $(DEMO)/cartpole_dsqn.nir --env CartPole-v1 --episodes 5 \
		--compare reference --results $(DEMO)/nest.jsonl --json $(DEMO)/nest.json --plot $(DEMO)/nest.png

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) out
