"""Synaptic ops of a :class:`~exporters.plan.ir.Plan` as sparse matrices (no simulator here).

NEST, SpiNNaker and Loihi only have point-to-point synapses, so every dense, convolutional,
pooling and scaling op becomes an explicit ``(post, pre, weight)`` list. Index lists are made
with numpy broadcasting, never a Python loop over synapses; Lava's lowering builds its maps
from the same :func:`conv_matrix`, :func:`pool_matrix` and :func:`dense_matrix`. Consecutive
synaptic ops without a neuron in between (conv -> pool, flatten -> affine) are composed into
one matrix (:class:`Form`), so what NEST sees is, for every neuron population, ``drive = sum_src M_src @ s_src + const`` over its
sources (other populations, or the observation).

The memory check must run *before* any of this is materialised (a too-large network must
fail with a clear error, not with the OOM killer), so :func:`op_nnz` counts synapses
analytically from the shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from exporters.plan.ir import Op
from pipeline.errors import UserError

INDEX = np.int64


def _pair(v: object) -> tuple[int, int]:
    a = np.broadcast_to(np.asarray(v).reshape(-1), (2,))
    return int(a[0]), int(a[1])


def _conv_padding(op: Op, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Padding before the first row/column (torch's ``same`` puts an odd extra one after the last)."""
    pad = op.params["padding"]
    if isinstance(pad, str):  # torch's string paddings, as the reference passes them to F.conv2d
        if pad == "valid":
            return 0, 0
        if pad != "same":
            raise UserError(f"unknown conv padding {pad!r}")
        return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))  # type: ignore[return-value]
    return _pair(pad)


def _axis_taps(n_out: int, n_in: int, k: int, stride: int, pad: int, dil: int) -> tuple[np.ndarray, np.ndarray]:
    """Input index of every (output position, kernel tap) pair along one axis, and validity."""
    idx = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    return idx, (idx >= 0) & (idx < n_in)


def conv_coo(op: Op) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(post, pre, weight) of a Conv2d on flattened C-order (C, H, W) tensors."""
    w = np.asarray(op.params["weight"], dtype=np.float64)
    c_out, cg, kh, kw = w.shape
    c_in, h_in, w_in = op.in_shape
    _, h_out, w_out = op.out_shape
    groups = int(op.params["groups"])
    sh, sw = op.params["stride"]
    dh, dw = op.params["dilation"]
    ph, pw = _conv_padding(op, (kh, kw), (dh, dw))
    iy, vy = _axis_taps(h_out, h_in, kh, sh, ph, dh)  # [h_out, kh]
    ix, vx = _axis_taps(w_out, w_in, kw, sw, pw, dw)  # [w_out, kw]
    per_group = c_out // groups
    co = np.arange(c_out).reshape(-1, 1, 1, 1, 1, 1)
    ci = (co // per_group) * cg + np.arange(cg).reshape(1, 1, 1, -1, 1, 1)
    yy = iy.reshape(1, h_out, 1, 1, kh, 1)
    xx = ix.reshape(1, 1, w_out, 1, 1, kw)
    valid = vy.reshape(1, h_out, 1, 1, kh, 1) & vx.reshape(1, 1, w_out, 1, 1, kw)
    shape = (c_out, h_out, w_out, cg, kh, kw)
    valid = np.broadcast_to(valid, shape)
    post = ((co * h_out + np.arange(h_out).reshape(1, -1, 1, 1, 1, 1)) * w_out
            + np.arange(w_out).reshape(1, 1, -1, 1, 1, 1))
    pre = (ci * h_in + yy) * w_in + xx
    weight = w.reshape(c_out, 1, 1, cg, kh, kw)
    post = np.broadcast_to(post, shape)[valid].astype(INDEX)
    pre = np.broadcast_to(pre, shape)[valid].astype(INDEX)
    weight = np.broadcast_to(weight, shape)[valid]
    assert c_in == groups * cg
    return post, pre, weight


def pool_coo(op: Op) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(post, pre, weight) of SumPool2d (weight 1) or AvgPool2d (1 / kernel area, padding counted)."""
    c, h_in, w_in = op.in_shape
    _, h_out, w_out = op.out_shape
    kh, kw = op.params["kernel_size"]
    sh, sw = op.params["stride"]
    ph, pw = op.params["padding"]
    iy, vy = _axis_taps(h_out, h_in, kh, sh, ph, 1)
    ix, vx = _axis_taps(w_out, w_in, kw, sw, pw, 1)
    shape = (c, h_out, w_out, kh, kw)
    ch = np.arange(c).reshape(-1, 1, 1, 1, 1)
    valid = np.broadcast_to(vy.reshape(1, h_out, 1, kh, 1) & vx.reshape(1, 1, w_out, 1, kw), shape)
    post = (ch * h_out + np.arange(h_out).reshape(1, -1, 1, 1, 1)) * w_out + np.arange(w_out).reshape(1, 1, -1, 1, 1)
    pre = (ch * h_in + iy.reshape(1, h_out, 1, kh, 1)) * w_in + ix.reshape(1, 1, w_out, 1, kw)
    post = np.broadcast_to(post, shape)[valid].astype(INDEX)
    pre = np.broadcast_to(pre, shape)[valid].astype(INDEX)
    value = 1.0 if op.kind == "sumpool2d" else 1.0 / (kh * kw)  # F.avg_pool2d: count_include_pad
    return post, pre, np.full(post.shape, value)


def _coo_matrix(op: Op, post: np.ndarray, pre: np.ndarray, w: np.ndarray) -> sp.csr_matrix:
    """Canonical CSR (rows sorted, no duplicates, no stored zeros) ``[prod(out), prod(in)]``."""
    keep = w != 0
    m = sp.csr_matrix((w[keep], (post[keep], pre[keep])), shape=(int(np.prod(op.out_shape)), int(np.prod(op.in_shape))))
    m.sum_duplicates()
    return m


def conv_matrix(op: Op) -> sp.csr_matrix:
    """A Conv2d's weights as a sparse matrix on flattened C-order tensors (no bias)."""
    return _coo_matrix(op, *conv_coo(op))


def pool_matrix(op: Op) -> sp.csr_matrix:
    """SumPool2d / AvgPool2d as a sparse matrix on flattened C-order tensors."""
    return _coo_matrix(op, *pool_coo(op))


def dense_matrix(op: Op) -> sp.csr_matrix:
    """An Affine/Linear weight as a sparse matrix; torch applies it to the last dimension of
    every leading index, so a leading shape makes it block-diagonal."""
    w = np.asarray(op.params["weight"], dtype=np.float64)
    lead = int(np.prod(op.in_shape)) // w.shape[1]
    m = sp.csr_matrix(w)
    if lead > 1:
        m = sp.kron(sp.identity(lead, format="csr"), m, format="csr")
    m.eliminate_zeros()
    return m


def dense_bias(op: Op) -> np.ndarray:
    """An Affine's bias for every leading index of its input (see :func:`dense_matrix`)."""
    w_in = np.shape(op.params["weight"])[1]
    return np.tile(np.asarray(op.params["bias"], dtype=np.float64).reshape(-1), int(np.prod(op.in_shape)) // w_in)


def synapse_matrix(op: Op) -> tuple[sp.csr_matrix | None, np.ndarray | None]:
    """The op as ``y = A x + b`` on flattened tensors; A None means identity, b None no bias."""
    n_out = int(np.prod(op.out_shape))
    kind = op.kind
    if kind == "flatten":
        return None, None
    if kind in ("affine", "linear"):
        a = dense_matrix(op)
        b = dense_bias(op) if kind == "affine" else None
    elif kind == "scale":
        s = np.broadcast_to(np.asarray(op.params["scale"], dtype=np.float64), op.in_shape).reshape(-1)
        a, b = sp.diags(s, format="csr"), None
        a.eliminate_zeros()
    elif kind == "conv2d":
        a = conv_matrix(op)
        bias = np.asarray(op.params["bias"], dtype=np.float64).reshape(-1)
        b = np.repeat(bias, n_out // bias.size) if np.any(bias != 0) else None
    elif kind in ("sumpool2d", "avgpool2d"):
        a, b = pool_matrix(op), None
    else:
        raise AssertionError(kind)
    return a, b


# ---------------------------------------------------------------- drive forms


@dataclass
class Form:
    """A value as a linear function of sources: ``sum_src terms[src] @ x_src + const``, plus
    ``late`` terms on the sources' values of the previous step (a loop's closing edge, docs/NIR.md
    "Recurrence"; zero before the first step, so the constant is the same at every step).

    A term of None is the identity (the value *is* that source, e.g. right after a neuron).
    """

    terms: dict[str, sp.csr_matrix | None] = field(default_factory=dict)
    const: np.ndarray | None = None
    late: dict[str, sp.csr_matrix | None] = field(default_factory=dict)


def _as_matrix(m: sp.csr_matrix | None, n: int) -> sp.csr_matrix:
    return sp.identity(n, format="csr", dtype=np.float64) if m is None else m


def add_forms(forms: list[Form], n: int) -> Form:
    """Several inputs into one node are summed (docs/DESIGN.md / docs/NIR.md section 1)."""
    if len(forms) == 1:
        return forms[0]
    out = Form()
    for f in forms:
        for mine, theirs in ((out.terms, f.terms), (out.late, f.late)):
            for src, m in theirs.items():
                mine[src] = _as_matrix(m, n) if src not in mine else \
                    (_as_matrix(mine[src], n) + _as_matrix(m, n)).tocsr()
        if f.const is not None:
            out.const = f.const.copy() if out.const is None else out.const + f.const
    return out


def delay_form(form: Form, node: str) -> Form:
    """``form`` carried over a loop's closing edge into ``node``: its terms one step late. The
    constant stays (every source is zero before the first step, docs/NIR.md "Recurrence"); a term
    already late would arrive two steps late, which no delayed-spike target lays out."""
    if form.late:
        raise UserError(f"node {node!r}: it receives {', '.join(map(repr, form.late))} through two loop edges "
                        "(two steps late); this target lays out loops of one step only")
    return Form({}, None if form.const is None else form.const.copy(), dict(form.terms))


def apply_op(op: Op, form: Form) -> Form:
    """The form of ``op(value)`` given the form of its (summed) input."""
    a, b = synapse_matrix(op)
    if a is None:
        return Form(dict(form.terms), None if form.const is None else form.const.copy(), dict(form.late))
    terms = {src: (a if m is None else (a @ m).tocsr()) for src, m in form.terms.items()}
    late = {src: (a if m is None else (a @ m).tocsr()) for src, m in form.late.items()}
    const = None if form.const is None else a @ form.const
    if b is not None:
        const = b.copy() if const is None else const + b
    return Form(terms, const, late)


# ---------------------------------------------------------------- estimates (before building anything)


def op_nnz(op: Op) -> tuple[int, int]:
    """(synapse count, largest fan-in of one output) of a synaptic op, from shapes only."""
    n_in = int(np.prod(op.in_shape))
    kind = op.kind
    if kind == "flatten":
        return 0, 1
    if kind in ("affine", "linear"):
        w = np.asarray(op.params["weight"])
        return int(np.count_nonzero(w)), n_in
    if kind == "scale":
        return n_in, 1
    if kind == "conv2d":
        c_out, cg, kh, kw = np.shape(op.params["weight"])
        _, h_in, w_in = op.in_shape
        _, h_out, w_out = op.out_shape
        dh, dw = op.params["dilation"]
        ph, pw = _conv_padding(op, (kh, kw), (dh, dw))
        sh, sw = op.params["stride"]
        ny = int(_axis_taps(h_out, h_in, kh, sh, ph, dh)[1].sum())
        nx = int(_axis_taps(w_out, w_in, kw, sw, pw, dw)[1].sum())
        return c_out * cg * ny * nx, cg * kh * kw
    if kind in ("sumpool2d", "avgpool2d"):
        c, h_in, w_in = op.in_shape
        _, h_out, w_out = op.out_shape
        kh, kw = op.params["kernel_size"]
        sh, sw = op.params["stride"]
        ph, pw = op.params["padding"]
        ny = int(_axis_taps(h_out, h_in, kh, sh, ph, 1)[1].sum())
        nx = int(_axis_taps(w_out, w_in, kw, sw, pw, 1)[1].sum())
        return c * ny * nx, kh * kw
    raise AssertionError(kind)


def estimate_apply(op: Op, est: dict[str, tuple[int, int]], sizes: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Upper bounds (synapses, largest fan-in) per source after ``op``; identity terms are (size, 1)."""
    if op.kind == "flatten":
        return dict(est)
    nnz, fan = op_nnz(op)
    n_out = int(np.prod(op.out_shape))
    # nnz(A @ M) <= nnz(A) * (largest row count of M), and <= the dense size
    return {src: (min(nnz * f, n_out * sizes[src]), fan * f) for src, (_, f) in est.items()}


def estimate_add(ests: list[dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for e in ests:
        for src, (nnz, fan) in e.items():
            prev = out.get(src, (0, 0))
            out[src] = (prev[0] + nnz, prev[1] + fan)
    return out
