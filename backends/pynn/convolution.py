"""sPyNNaker's ``ConvolutionConnector`` against torch's ``conv2d``: the exact semantics, and the
arguments that make the two connect the same neurons with the same weights.

What sPyNNaker 7.4 does (``local_only_conv_impl.c``, ``convolution_connector.py``), per axis,
for a presynaptic neuron at row ``r`` with padding ``P``, stride ``S``, kernel ``K`` of size k:
``p = r + P``, ``q0 = p // S``, ``i0 = p % S``; it adds ``K[k-1-i]`` to postsynaptic rows
``q0, q0-1, ...`` for ``i = i0, i0+S, ... < k``. So post ``q`` sums ``K[k-1-i] x[qS + i - P]``:
torch's window (``out[q] = sum_i W[i] x[qS + i - P]``) with the kernel **flipped**. The
connector sizes the post population as ``(n + 2P - (k-1)) // S``; torch has
``(n + 2P - k) // S + 1`` — one less whenever ``S > 1`` and ``(n + 2P - k) % S == 0``
(20x20, k 4, S 2: 8x8 instead of 9x9), so a strided torch layer cannot be given as is.

The exact equivalent (:func:`connector_args`): prepend ``a = S - 1`` zero taps to the kernel and
pad ``P + a``. The windows then start ``a`` rows earlier, on the zero taps, so each post row
sees exactly torch's inputs, and the size becomes ``(n + 2P + 2a - (k + a - 1)) // S =
(n + 2P - k + S) // S``, torch's. Passed flipped, since sPyNNaker flips it back.

A connector joins one 2-D channel to one 2-D channel (a C_in x C_out layer is C_in x C_out
projections between per-channel populations) and needs postsynaptic ``IF_curr_exp``
populations (the only ``*_conv`` binary sPyNNaker 7.4 ships): see docs/SPINNAKER.md for why the
deployed networks use explicit lists instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConnectorArgs:
    kernel: np.ndarray  # what to pass as kernel_weights
    padding: tuple[int, int]
    strides: tuple[int, int]


def torch_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def spynnaker_out(n: int, k: int, s: int, p: int) -> int:
    """``ConvolutionConnector.get_post_shape`` along one axis (no pooling)."""
    return max(1, (n - (k - 1) + 2 * p) // s)


def connector_args(weight: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]) -> ConnectorArgs:
    """Connector arguments reproducing torch's ``conv2d`` of one channel pair (``weight`` [kh, kw])."""
    kh, kw = weight.shape
    ah, aw = stride[0] - 1, stride[1] - 1
    extended = np.zeros((kh + ah, kw + aw), dtype=np.float64)
    extended[ah:, aw:] = weight
    return ConnectorArgs(extended[::-1, ::-1].copy(), (padding[0] + ah, padding[1] + aw), tuple(stride))


def emulate(kernel: np.ndarray, padding: tuple[int, int], strides: tuple[int, int], in_shape: tuple[int, int],
            post_shape: tuple[int, int]) -> dict[tuple[int, int], float]:
    """(pre index, post index) -> weight, as sPyNNaker's C code adds a presynaptic spike (row-major
    flattened indices of the 2-D populations)."""
    kh, kw = kernel.shape
    out: dict[tuple[int, int], float] = {}
    for r in range(in_shape[0]):
        pr = r + padding[0]
        for c in range(in_shape[1]):
            pc = c + padding[1]
            rows = zip(range(pr % strides[0], kh, strides[0]), range(pr // strides[0], -(10 ** 9), -1))
            for i_row, q_row in rows:
                if not 0 <= q_row < post_shape[0]:
                    continue
                cols = zip(range(pc % strides[1], kw, strides[1]), range(pc // strides[1], -(10 ** 9), -1))
                for i_col, q_col in cols:
                    if not 0 <= q_col < post_shape[1]:
                        continue
                    w = kernel[kh - 1 - i_row, kw - 1 - i_col]
                    if w != 0:
                        out[(r * in_shape[1] + c, q_row * post_shape[1] + q_col)] = float(w)
    return out


def torch_conv(weight: np.ndarray, stride: tuple[int, int], padding: tuple[int, int],
               in_shape: tuple[int, int]) -> dict[tuple[int, int], float]:
    """(pre index, post index) -> weight of torch's cross-correlation of one channel pair."""
    kh, kw = weight.shape
    oh, ow = (torch_out(in_shape[0], kh, stride[0], padding[0]), torch_out(in_shape[1], kw, stride[1], padding[1]))
    out: dict[tuple[int, int], float] = {}
    for qr in range(oh):
        for qc in range(ow):
            for i in range(kh):
                for j in range(kw):
                    r, c = qr * stride[0] + i - padding[0], qc * stride[1] + j - padding[1]
                    if 0 <= r < in_shape[0] and 0 <= c < in_shape[1] and weight[i, j] != 0:
                        out[(r * in_shape[1] + c, qr * ow + qc)] = float(weight[i, j])
    return out


def check(weight: np.ndarray, stride: tuple[int, int], padding: tuple[int, int], in_shape: tuple[int, int],
          kernel: np.ndarray | None = None, post_shape: tuple[int, int] | None = None,
          args_padding: tuple[int, int] | None = None) -> dict[str, object]:
    """Compare torch's connectivity with sPyNNaker's for :func:`connector_args` (or for the
    kernel/padding/post shape a mapped connector actually holds, when given)."""
    args = connector_args(weight, stride, padding)
    kernel = args.kernel if kernel is None else kernel
    pad = args.padding if args_padding is None else args_padding
    if post_shape is None:
        post_shape = (spynnaker_out(in_shape[0], kernel.shape[0], stride[0], pad[0]),
                      spynnaker_out(in_shape[1], kernel.shape[1], stride[1], pad[1]))
    want = torch_conv(weight, stride, padding, in_shape)
    got = emulate(kernel, pad, stride, in_shape, post_shape)
    same_pairs = set(want) == set(got)
    err = max((abs(got[k] - want[k]) for k in want if k in got), default=0.0)
    torch_shape = tuple(torch_out(n, k, s, p) for n, k, s, p in zip(in_shape, weight.shape, stride, padding))
    naive = tuple(spynnaker_out(n, k, s, p) for n, k, s, p in zip(in_shape, weight.shape, stride, padding))
    return {"in": list(in_shape), "kernel": list(weight.shape), "stride": list(stride), "padding": list(padding),
            "torch_out": list(torch_shape), "naive_connector_out": list(naive), "connector_out": list(post_shape),
            "synapses": len(want), "same_synapses": same_pairs, "max_weight_err": err}


def check_on_virtual_board(cases: list[dict[str, object]], workdir: str, python: str | None = None,
                           timeout: float = 900.0) -> list[dict[str, object]]:
    """Run :func:`backends.pynn.spinnaker_worker.conv_check` on a virtual board in a worker
    process (sPyNNaker holds one simulation per process and reads its cfg from HOME)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from backends.pynn.spinnaker_config import MachineConfig
    from pipeline.errors import UserError

    folder = Path(workdir)
    (folder / "home").mkdir(parents=True, exist_ok=True)
    cfg = MachineConfig("virtual", {"virtual_board": "True", "version": "5"})
    (folder / "home" / ".spynnaker.cfg").write_text(cfg.cfg_text(report_dir=str(folder / "reports")) + "\n")
    (folder / "conv_check.json").write_text(json.dumps(cases))
    env = dict(os.environ, HOME=str(folder / "home"))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(folder / "worker.log", "w") as log:
        proc = subprocess.run([python or sys.executable, "-m", "backends.pynn.spinnaker_worker", str(folder),
                               "--conv-check"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                              timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    reply = json.loads(lines[-1]) if lines else {"error": f"worker exited with {proc.returncode}"}
    if reply.get("error"):
        raise UserError(f"sPyNNaker convolution check: {reply['error']} (see {folder / 'worker.log'})")
    return reply["conv"]
