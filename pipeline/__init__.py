"""Floor 1 of four (pipeline < exporters < backends < benchmarks): the shared vocabulary and
everything torch.

* The words every floor uses: ``errors`` (``UserError``), ``cli`` (one ``error:`` line and exit 2),
  ``runtime`` (threads, memory), ``spec`` (what a Q-network is), ``encoding`` (how an observation
  becomes layer 0's input), ``backend_api`` (what the closed loop needs from a target:
  ``Backend``, ``Readout``, the batch check, the greedy action) and ``graph_meta`` (what a
  graph's metadata says about its environment and preprocessing).
* Torch: neuron dynamics (``neurons``), the DQN and DSQN models (``models``), checkpoints
  (``checkpoint``), training (``train`` and the modules it uses), evaluation (``evaluate``) and
  DQN -> SNN conversion (``convert``, ``calibration``).
* The closed loop: environments and preprocessing (``envs``), the loop itself (``bridge``), and a
  torch checkpoint as one more participant in it (``policy``).

Nothing here imports from ``exporters/`` or ``backends/``, not even inside a function: the floors
above build on this one, never the reverse (``tests/test_layering.py`` reads every import).
"""
