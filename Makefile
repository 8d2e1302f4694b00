# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv (scripts/install.sh) on first use and skip that step afterwards,
# unless pyproject.toml, constraints.txt or the install script changed.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := out/demo

.PHONY: demo demo-atari test env bench bench-quick clean

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

# The bundled Pong DSQN and converted SNN (examples/pong_*.pt, benchmarks/pong_agents.py), exported to
# NIR, play Pong on NEST and on Lava with the reference beside them: return, agreement, step split.
# To stay under 10 minutes on 2 cores: episodes capped at 100 agent steps (--max-steps), the converted SNN
# at T 100 (--converted-T, benchmarks/pong_agents.py DEMO_CONVERTED_T), two runs at a time (--jobs);
# docs/ATARI_TRAINING.md gives the measured time.
demo-atari: $(STAMP)
	$(PY) benchmarks/pong_demo.py --out out/demo-atari

test: $(STAMP)
	$(PY) -m pytest -q tests

# Every measurement of the issues in one run (benchmarks/run_all.py): JSON, markdown, PNGs in
# out/bench/ and a regenerated docs/RESULTS.md. bench-quick: small sizes (tens of minutes with the Pong agents: their matrix cells dominate).
bench: $(STAMP)
	$(PY) benchmarks/run_all.py --docs

bench-quick: $(STAMP)
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) out
