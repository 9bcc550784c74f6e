"""A fused CPU/GPU evaluation of the network's 'uvu' tensor products (one GEMM per input irrep).

e3nn's generated code evaluates each path of :class:`e3nn.o3.TensorProduct` separately (an einsum per path plus
concatenations): for the edge messages of :class:`~trajden.model.network.ScoreNet` that is most of the run time.
All paths that start from the same input irrep (``l1``, multiplicity ``u``) share the outer product of the input
with the edge's spherical harmonics, so

    Z[e, u, (i, j)] = x1[e, u, i] * Y[e, j]            (outer product, all paths of this input irrep)
    P[e, u, :]      = Z[e, u, :] @ C                    (one GEMM: Clebsch-Gordan x path normalisation)
    out[e, slot_p]  = P[e, u, cols_p] * w[e, path_p, u]  (per-edge radial weights)

``C`` is read off the tensor product itself (one-hot probes in float64), so normalisation conventions are the
tensor product's own; :func:`fused_tensor_products` checks the fused products against the model file's scripted
ones on random inputs and returns ``None`` (use the scripted ones) when they disagree or the structure is not
the one described here.
"""

from __future__ import annotations

import copy

import torch


class FusedTP(torch.nn.Module):
    """``out = TP(x1, x2, w)`` for a 'uvu' tensor product with per-edge weights (``shared_weights=False``)."""

    def __init__(self, tp):
        super().__init__()
        ins = list(tp.instructions)
        if not ins or any(i.connection_mode != "uvu" or not i.has_weight for i in ins):
            raise ValueError("only 'uvu' tensor products with weights are fused")
        self.dim_in1, self.dim_in2, self.dim_out = tp.irreps_in1.dim, tp.irreps_in2.dim, tp.irreps_out.dim
        in1_slices = tp.irreps_in1.slices()
        out_slices = tp.irreps_out.slices()
        # weight offsets in instruction order ('uvu': path_shape = (u,))
        w_off, offsets = 0, []
        for i in ins:
            offsets.append(w_off)
            w_off += i.path_shape[0]
        if w_off != tp.weight_numel:
            raise ValueError("unexpected weight layout")
        tp64 = copy.deepcopy(tp).double()  # probed in float64; the caller's module is left as it is
        self.groups = []
        self.paths: list[list[tuple[int, int, int]]] = []  # per group: (first column, width, first weight)
        #: per group, ``entries[g][i][c]``: the nonzero coupling coefficients ``(j, C[i, j, c])`` of input
        #: component ``i`` and harmonic ``j`` to the group's column ``c`` (Python floats: constants that
        #: ``torch.compile`` folds into :meth:`aggregate_rows`; Clebsch-Gordan matrices are mostly zeros)
        self.entries: list[tuple] = []
        std: list[int] = []
        d2 = self.dim_in2
        for b, (mul, ir) in enumerate(tp.irreps_in1):
            paths = [(k, i) for k, i in enumerate(ins) if i.i_in1 == b]
            if not paths:
                continue
            d1 = ir.dim
            cols, blocks = 0, []
            mats = []
            for k, i in paths:
                d3 = tp.irreps_out[i.i_out].ir.dim
                mats.append(_probe_path(tp64, offsets[k], in1_slices[b].start, d1, out_slices[i.i_out].start, d3))
                blocks.append((cols, d3, offsets[k], out_slices[i.i_out].start))
                cols += d3
            C = torch.cat(mats, dim=1)  # (d1 * d2, cols)
            C3 = C.view(d1, d2, cols)
            self.entries.append(tuple(
                tuple(tuple((j, float(C3[i, j, c])) for j in range(d2) if abs(float(C3[i, j, c])) > 1e-12)
                      for c in range(cols))
                for i in range(d1)))
            Ct = C.view(d1, d2, cols).transpose(0, 1).reshape(d2, d1 * cols)  # M = Y @ Ct -> (E, d1, cols)
            self.register_buffer(f"ct{len(self.groups)}", Ct.float().contiguous())
            self.groups.append((in1_slices[b].start, mul, d1, cols))
            self.paths.append([(c0, d3, w0) for c0, d3, w0, _o0 in blocks])
            # fused column order: group-major, then channel u, then the group's columns
            for u in range(mul):
                for _c0, d3, _w0, o0 in blocks:
                    for m in range(d3):
                        std.append(o0 + u * d3 + m)
        self.weight_numel = tp.weight_numel
        order = torch.tensor(std, dtype=torch.long)
        if sorted(std) != list(range(self.dim_out)):
            raise ValueError("the paths do not cover the output irreps once each")
        self.register_buffer("to_standard_index", torch.argsort(order))  # standard column k = fused column idx[k]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Messages (E, dim_out) in the *fused* column order; :meth:`standard` maps (summed) messages back."""
        E = x1.shape[0]
        out = torch.empty(E, self.dim_out, dtype=x1.dtype, device=x1.device)
        col = 0
        for g, (start, mul, d1, cols) in enumerate(self.groups):
            X = x1[:, start : start + mul * d1].reshape(E, mul, d1)
            M = (x2 @ getattr(self, f"ct{g}")).view(E, d1, cols)
            P = out[:, col : col + mul * cols].view(E, mul, cols)  # written in place, no concatenation
            torch.mul(X[:, :, 0:1], M[:, None, 0, :], out=P)
            for i in range(1, d1):
                P.addcmul_(X[:, :, i : i + 1], M[:, None, i, :])
            for c0, d3, w0 in self.paths[g]:  # radial weights per (path, channel), broadcast over the path's m
                P[:, :, c0 : c0 + d3].mul_(w[:, w0 : w0 + mul].unsqueeze(-1))
            col += mul * cols
        return out

    def _messages(self, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without in-place views (leading dimensions of any shape): what ``torch.compile``
        fuses."""
        lead = x1.shape[:-1]
        parts = []
        for g, (start, mul, d1, cols) in enumerate(self.groups):
            X = x1[..., start : start + mul * d1].reshape(*lead, mul, d1)
            M = (x2 @ getattr(self, f"ct{g}")).reshape(*lead, d1, cols)
            P = (X.unsqueeze(-1) * M.unsqueeze(-3)).sum(-2)  # (..., mul, cols)
            W = torch.cat([w[..., w0 : w0 + mul].unsqueeze(-1).expand(*lead, mul, d3) for _c0, d3, w0 in self.paths[g]],
                          dim=-1)
            parts.append((P * W).reshape(*lead, mul * cols))
        return torch.cat(parts, -1)

    def aggregate(self, h: torch.Tensor, src: torch.Tensor, dst_local: torch.Tensor, x2: torch.Tensor,
                  lengths: torch.Tensor, table: torch.Tensor, delta: torch.Tensor, r_min: float, step: float,
                  n_rows: int) -> torch.Tensor:
        """Messages of edges ``src -> dst_local`` summed per row (fused column order), the radial weights
        interpolated from ``table``/``delta`` (:class:`trajden.model.evaluate.RadialTable`) at ``lengths``:
        ``zeros(n_rows).index_add(0, dst_local, forward(h[src], x2, w))``. Written for ``torch.compile``: the
        gather, the interpolation, the products and the sum fuse into a few kernels and the (E, dim_out)
        messages are never materialised (the sum uses atomic adds on a GPU)."""
        w = interpolate(table, delta, lengths, r_min, step)
        msg = self._messages(h.index_select(0, src), x2, w)
        return torch.zeros(n_rows, self.dim_out, dtype=msg.dtype, device=msg.device).index_add(0, dst_local, msg)

    def aggregate_padded(self, h: torch.Tensor, src: torch.Tensor, x2: torch.Tensor, lengths: torch.Tensor,
                         slots: torch.Tensor, table: torch.Tensor, delta: torch.Tensor, r_min: float,
                         step: float) -> torch.Tensor:
        """:meth:`aggregate` as a reduction without atomics: ``slots`` (n_rows, K) holds each row's edge
        indices, -1 where a row has fewer than K edges (see :func:`trajden.model.evaluate.edge_slots`)."""
        valid = slots >= 0
        e = slots.clamp(min=0)
        w = interpolate(table, delta, lengths[e], r_min, step) * valid.unsqueeze(-1)  # padding weighs zero
        msg = self._messages(h.index_select(0, src[e].reshape(-1)).reshape(*e.shape, -1), x2[e], w)
        return msg.sum(1)

    def aggregate_rows(self, h: torch.Tensor, src: torch.Tensor, vec: torch.Tensor, slots: torch.Tensor,
                       table: torch.Tensor, delta: torch.Tensor, r_min: float, step: float) -> torch.Tensor:
        """:meth:`aggregate` per row without atomics or a message buffer: ``slots`` (n_rows, K) holds each
        row's edge indices (-1 past its last edge; :func:`trajden.model.evaluate.edge_slots`), ``vec`` the
        edges' vectors, from which the lengths and harmonics are computed here.

        Written for ``torch.compile`` on a CPU. Every message column is spelled out as a sum over the nonzero
        coupling coefficients (:attr:`entries`) of products of per-edge scalars and the channels' inputs, and
        reduced over the row's edges at once; inductor then fuses the gathers, the harmonics, the products,
        the radial weights and the sums into one loop over the rows (no matrix products, which would make it
        materialise the messages). On 2 cores a whole compiled layer this way ran 2.2x faster than with the
        compiled :meth:`aggregate` for fcc-bcc-hcp-fast (250k atoms), and for the default model 6.5x faster
        than that and 4.7x faster than eager (100k atoms)."""
        rows, k = slots.shape
        valid = slots >= 0
        e = slots.clamp(min=0)
        v = vec[e]  # (rows, K, 3); padding slots read edge 0 and weigh zero
        lengths = torch.sqrt((v * v).sum(-1))
        y = self.sh(v)
        w = interpolate(table, delta, lengths, r_min, step) * valid.unsqueeze(-1)
        x1 = h[src[e]]
        parts = []
        for g, (start, mul, d1, cols) in enumerate(self.groups):
            X = x1[..., start : start + mul * d1].reshape(rows, k, mul, d1)
            columns = []
            for c0, d3, w0 in self.paths[g]:
                W = w[..., w0 : w0 + mul]
                for c in range(c0, c0 + d3):
                    acc = None
                    for i in range(d1):
                        m = None  # the harmonics' coupling to (i, c): a few constant-weighted terms
                        for j, coef in self.entries[g][i][c]:
                            m = y[..., j] * coef if m is None else m + y[..., j] * coef
                        if m is not None:
                            acc = X[..., i] * m.unsqueeze(-1) if acc is None else acc + X[..., i] * m.unsqueeze(-1)
                    columns.append(torch.zeros_like(W[:, 0]) if acc is None else (acc * W).sum(1))  # (rows, mul)
            parts.append(torch.stack(columns, -1).reshape(rows, mul * cols))
        return torch.cat(parts, -1)

    def block(self, h: torch.Tensor, x_rows: torch.Tensor, src: torch.Tensor, vec: torch.Tensor,
              slots: torch.Tensor, table: torch.Tensor, delta: torch.Tensor, r_min: float, step: float,
              inv_sqrt_nb: float) -> torch.Tensor:
        """One interaction layer's output for the rows of ``slots`` (rows ``x_rows`` of the layer's input):
        :meth:`aggregate_rows`, then the layer's linear, gate and self-connection. Needs the Python layer
        (:meth:`attach`); written for ``torch.compile`` (the CPU's compiled path)."""
        return self.update(x_rows, self.aggregate_rows(h, src, vec, slots, table, delta, r_min, step), inv_sqrt_nb)

    def update(self, x_rows: torch.Tensor, agg: torch.Tensor, inv_sqrt_nb: float) -> torch.Tensor:
        """The layer's output for rows ``x_rows`` of its input from their summed messages ``agg`` (fused
        column order): linear, gate and self-connection of the Python layer (:meth:`attach`)."""
        layer = self.layer
        return layer.self_connection(x_rows) + layer.gate(layer.linear_2(self.standard(agg) * inv_sqrt_nb))

    def attach(self, layer, sh) -> None:
        """Keep the Python :class:`~trajden.model.network.Interaction` ``layer`` (the file's weights) and the
        network's spherical harmonics for :meth:`block`."""
        self.layer, self.sh = layer, sh

    def standard(self, messages: torch.Tensor) -> torch.Tensor:
        """Columns of fused-order messages (or their per-atom sums) in the tensor product's own order."""
        return messages.index_select(1, self.to_standard_index)

    def reference_order(self, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The tensor product's output in its own column order."""
        return self.standard(self.forward(x1, x2, w))


def interpolate(table: torch.Tensor, delta: torch.Tensor, lengths: torch.Tensor, r_min: float,
                step: float) -> torch.Tensor:
    """Linear interpolation of a uniform table (rows at ``r_min + i * step``; ``delta[i] = table[i+1] -
    table[i]``) at ``lengths``, clamped to the table's ends."""
    t = ((lengths - r_min) / step).clamp(0.0, table.shape[0] - 1.0)
    i = t.long()
    return torch.addcmul(table[i], delta[i], (t - i).unsqueeze(-1))


def _probe_path(tp64, w0: int, in_start: int, d1: int, out_start: int, d3: int) -> torch.Tensor:
    """The (d1 * d2, d3) bilinear map of the path whose weights start at ``w0``, for channel 0 (the same for
    every channel in 'uvu'); ``tp64``: the tensor product in float64."""
    d2 = tp64.irreps_in2.dim
    n = d1 * d2
    x1 = torch.zeros(n, tp64.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.zeros(n, d2, dtype=torch.float64)
    for i in range(d1):
        for j in range(d2):
            x1[i * d2 + j, in_start + i] = 1.0  # channel 0 of the input irrep ('mul_ir' layout: u-major)
            x2[i * d2 + j, j] = 1.0
    w = torch.zeros(n, tp64.weight_numel, dtype=torch.float64)
    w[:, w0] = 1.0
    with torch.no_grad():
        out = tp64(x1, x2, w)
    return out[:, out_start : out_start + d3].clone()  # channel 0 of the output slot


def fused_tensor_products(module, metadata: dict, atol: float = 1e-5) -> list | None:
    """Fused replacements for the tensor products of ``module``'s layers, or ``None`` when not applicable.

    The Python network is rebuilt from ``metadata["training_config"]`` with the file's weights; each fused
    product is checked against the scripted one on random inputs.
    """
    cfg = (metadata or {}).get("training_config")
    if not cfg:
        return None
    try:
        from trajden.model.network import ScoreNet

        net = ScoreNet(num_types=len(cfg["species"]), cutoff=cfg["cutoff"], hidden=cfg["hidden"],
                       n_layers=cfg["n_layers"], lmax=cfg["lmax"], n_basis=cfg["n_basis"],
                       radial_hidden=cfg["radial_hidden"])
        net.load_state_dict(module.state_dict(), strict=True)
        layers = dict(module.named_children())["layers"]
        scripted = [dict(layers.named_children())[str(i)] for i in range(len(net.layers))]
        from trajden.model.device import module_device

        device = module_device(module)  # the check runs the scripted products where they live
        fused = []
        gen = torch.Generator().manual_seed(1)
        for py_layer, sc_layer in zip(net.layers, scripted):
            f = FusedTP(py_layer.tp)
            x1 = torch.randn(64, f.dim_in1, generator=gen)
            x2 = torch.randn(64, f.dim_in2, generator=gen)
            w = torch.randn(64, py_layer.tp.weight_numel, generator=gen)
            with torch.no_grad():
                ref = sc_layer.tp(x1.to(device), x2.to(device), w.to(device)).cpu()
                got = f.reference_order(x1, x2, w)
            if ref.shape != got.shape or not torch.allclose(got, ref, atol=atol, rtol=1e-4):
                return None
            f.attach(py_layer, net.sh)
            fused.append(f)
        return fused
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError):
        return None
