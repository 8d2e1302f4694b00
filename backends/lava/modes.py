"""lava-fixed's result-changing modes, light enough for the target registry and the CLI to import
(no numpy, no Lava): the state scale (backends.lava.quantize, "Per-neuron state units")."""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError

# "layer": one state unit per population; "neuron": each spiking neuron (each channel of a conv
# layer) its own unit where that rounds its weights more finely
STATE_SCALES = ("layer", "neuron")
DEFAULT_STATE_SCALE = "layer"


def check_state_scale(state_scale: Any) -> str:
    """``state_scale`` if it names a mode of :data:`STATE_SCALES`, else a UserError listing them."""
    if state_scale not in STATE_SCALES:
        raise UserError(f"unknown state scale {state_scale!r}; valid choices: {', '.join(STATE_SCALES)} "
                        "(neuron: each neuron's own state unit where it rounds its weights more finely)")
    return str(state_scale)
