"""The float model with lava-fixed's weights: what the 8-bit rounding of the weights alone does.

Why: lava-fixed differs from the float64 reference by two things, the weights' mantissa rounding
(8 bits per synapse, one exponent per map) and the rest of the integer scheme (the 24-bit state
grid, the threshold and bias registers, the 12-bit decays and their truncation, the right shifts).
:func:`plan_with_fixed_weights` rebuilds the plan with every weight replaced by the value its
quantised synapse adds (``mant * q * 2**e / c``), so that the float64 reference run on it shows
the first part on its own; docs/LAVA.md (section 4, "Imported graphs") uses it to state what
lava-fixed can promise on a graph that was not fine-tuned for it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from backends.lava.lowering import Layout, lower
from backends.lava.quantize import FixedPop
from exporters.canonical import SYNAPSES, Op, Plan
from pipeline.errors import UserError

HOST = "<host>"


def plan_with_fixed_weights(plan: Plan, layout: Layout, quant: dict[str, FixedPop],
                            mantissa_bits: int | None = None) -> Plan:
    """``plan`` with the weight of every synaptic op replaced by what lava-fixed's synapses add.

    ``mantissa_bits``: instead of the synapses ``quant`` built, round each weight to a signed
    mantissa of that many bits at the map's step refined accordingly (``q 2**e / 2**(bits - 8)``,
    the largest weight of the map keeping its 8-bit place): how many bits a graph needs
    (8 reproduces ``quant``'s 8-bit synapses).
    With per-neuron state units (``quantize_layout(..., state_scale="neuron")``) each row is rounded
    on its own neuron's ``unit_i 2**e``.

    Each synapse map must come from one op with a ``weight`` (plus weightless ops: flatten,
    non-overlapping sum pooling), so that every map entry is one weight element; a weight element
    that several map entries share (a conv kernel) must get the same quantised value in each of
    them (true when the input scale ``c`` is constant per output channel). Otherwise a UserError
    names the op. Biases are left as they are (their 13-bit registers are part of the rest of the
    scheme). A float host map (``host_weights="float"``) keeps its weights."""
    by_name = {op.name: op for op in plan.ops}
    new_weights: dict[str, np.ndarray] = {}
    for dst, fp in quant.items():
        found = {src: _weighted_op(plan, by_name, dst, src, layout) for src, fmap in fp.maps.items()
                 if fmap.mant is not None}
        indices = {src: _index_map(plan, op, dst, src) for src, op in found.items()}
        unit = fp.units
        for src, op in found.items():
            fmap, index = fp.maps[src], indices[src]
            value = sp.csr_matrix(sp.diags(fp.units / fp.c) @ fmap.lsb())  # volts per source unit
            w = np.asarray(op.params["weight"], dtype=np.float64).reshape(-1).copy()
            coo = index.tocoo()
            k = np.rint(coo.data).astype(np.int64) - 1
            if not (np.allclose(coo.data, k + 1) and k.min(initial=0) >= 0 and k.max(initial=0) < w.size):
                raise UserError(f"node {op.name!r}: its synapse map entries are not single weights; the "
                                "float model with fixed-point weights cannot be built")
            if mantissa_bits is None:
                vals = np.asarray(value[coo.row, coo.col]).reshape(-1)
            else:
                c_row = fp.c[coo.row]
                vals = _rounded(w[k] * c_row, unit[coo.row] * 2.0 ** fmap.exp, mantissa_bits) / c_row
            lo = np.full(w.size, np.inf)
            hi = np.full(w.size, -np.inf)
            np.minimum.at(lo, k, vals)
            np.maximum.at(hi, k, vals)
            used = np.isfinite(lo)
            if np.any(hi[used] - lo[used] > 1e-9 * max(float(np.abs(vals).max(initial=0)), 1e-300)):
                raise UserError(f"node {op.name!r}: a shared weight gets different fixed-point values at "
                                "different synapses; the float model with fixed-point weights cannot be built")
            w[used] = lo[used]
            new_weights[op.name] = w.reshape(np.shape(op.params["weight"]))
    ops = [dataclasses.replace(op, params={**op.params, "weight": new_weights[op.name]})
           if op.name in new_weights else op for op in plan.ops]
    return dataclasses.replace(plan, ops=ops)


def _rounded(w: np.ndarray, step8: np.ndarray | float, bits: int) -> np.ndarray:
    """``w`` on a signed ``bits``-bit mantissa grid whose step is ``step8 / 2**(bits - 8)``."""
    step = step8 / 2.0 ** (bits - 8)
    top = 2.0 ** (bits - 1)
    return np.clip(np.round(w / step), -top, top - 1) * step


def _weighted_op(plan: Plan, by_name: dict[str, Op], dst: str, src: str, layout: Layout) -> Op:
    """The one op with a weight on the chain of synaptic ops from ``src`` (a population, or the
    input for the host map) into population ``dst``."""
    found: list[Op] = []
    stop = plan.input if src == HOST else src
    target = by_name[dst]
    # a readout integrator (an "identity" population) is the synaptic op the Output node reads
    starts = [dst] if target.kind in SYNAPSES else list(target.inputs) + list(target.recurrent)
    seen: set[str] = set()
    while starts:
        name = starts.pop()
        if name in seen or name == stop:
            continue
        seen.add(name)
        op = by_name[name]
        if op.kind not in SYNAPSES or (name in layout.pops and name != dst):
            continue
        if "weight" in op.params and _reaches(by_name, op, stop, layout):
            found.append(op)
        starts.extend(op.inputs)
    if len(found) != 1:
        raise UserError(f"node {dst!r}: its map from {src!r} has {len(found)} weighted ops (one needed) for the "
                        "float model with fixed-point weights")
    return found[0]


def _reaches(by_name: dict[str, Op], op: Op, stop: str, layout: Layout) -> bool:
    """Whether ``op``'s inputs lead back to ``stop`` through synaptic ops only."""
    todo, seen = list(op.inputs), set()
    while todo:
        name = todo.pop()
        if name == stop:
            return True
        if name in seen or name in layout.pops or by_name[name].kind not in SYNAPSES:
            continue
        seen.add(name)
        todo.extend(by_name[name].inputs)
    return False


def _index_map(plan: Plan, op: Op, dst: str, src: str) -> sp.csr_matrix:
    """The synapse map (src -> dst) of ``plan`` with ``op``'s weight elements numbered 1, 2, ...
    and its bias dropped: entry (i, j) names the weight element that synapse carries."""
    w = np.asarray(op.params["weight"])
    params = {**op.params, "weight": np.arange(1, w.size + 1, dtype=np.float64).reshape(w.shape)}
    if params.get("bias") is not None:
        params["bias"] = np.zeros_like(np.asarray(params["bias"], dtype=np.float64))
    indexed = dataclasses.replace(plan, ops=[dataclasses.replace(o, params=params) if o.name == op.name else o
                                             for o in plan.ops])
    lay = lower(indexed, fixed_point=True)
    pop = lay.pops[dst]
    if src == HOST:
        assert pop.host_matrix is not None
        return pop.host_matrix.tocsr()
    for c in lay.conns:
        if c.dst == dst and c.src == src and c.matrix is not None:
            return c.matrix.tocsr()
    raise AssertionError((dst, src))
