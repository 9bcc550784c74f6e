"""Memory-bounded, active-set evaluation of a loaded :class:`~trajden.model.network.ScoreNet`.

The scripted network's monolithic ``forward`` materialises every edge's messages at once (about 2.6 kB per
edge: 50 GB for a 10^6-atom frame). :class:`BlockedEvaluator` computes the same function layer by layer over
blocks of centre atoms: with edges sorted by their centre (``dst``), a block's messages come from one
contiguous edge range, are summed into that block's aggregate and discarded. Peak memory is then the node
features (two copies) plus one block's messages, whatever the frame size, and each atom's sum runs over the
same edges in the same order as the undivided forward.

It can also restrict the work to an *active set*: to get the outputs of ``active`` atoms, layer ``l`` (of
``L``) needs the features of atoms within ``L - l`` graph hops of them, so only those atoms' messages are
computed. Atoms outside the set keep their previous positions (their last update was below the threshold).

It drives the scripted submodules by name (``embedding``, ``sh``, ``basis``, ``layers.<i>.{linear_1, radial,
tp, linear_2, gate, self_connection}``, ``head``); a model without them falls back to ``forward``.
"""

from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from trajden.model.device import module_device  # noqa: F401 - re-exported (was defined here)
from trajden.model.fused import interpolate
from trajden.neighbors import Graph


class RadialTable:
    """A layer's radial weights ``radial(basis(r)) * envelope(r)`` tabulated on a uniform grid in ``r`` and
    linearly interpolated: one gather and one FMA per edge instead of the Bessel basis and a 3-layer MLP.

    Built from the layer's own modules; :meth:`max_error` is the worst interpolation error on random lengths
    (checked by :class:`BlockedEvaluator`, which falls back to the exact radial network above 1e-4; the
    float32 network itself rounds at about 1e-5).
    """

    def __init__(self, basis, radial, cutoff: float, points: int = 8192, r_min: float = 0.05,
                 device: torch.device | str = "cpu"):
        self.cutoff, self.r_min = float(cutoff), float(r_min)
        self.step = (self.cutoff - self.r_min) / (points - 1)
        self.device = torch.device(device)
        r = torch.linspace(self.r_min, self.cutoff, points, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            self.table = self._exact(basis, radial, r).float().contiguous()
            self.delta = torch.diff(self.table, dim=0, append=self.table[-1:]).contiguous()
        self._basis, self._radial = basis, radial

    @staticmethod
    def _exact(basis, radial, r):
        b, env = basis(r.float())
        return radial(b).double() * env.double().unsqueeze(-1)

    def __call__(self, lengths: torch.Tensor) -> torch.Tensor:
        return interpolate(self.table, self.delta, lengths, self.r_min, self.step)

    def max_error(self, samples: int = 20000) -> float:
        gen = torch.Generator().manual_seed(2)
        r = self.r_min + 0.45 + (self.cutoff - self.r_min - 0.45) * torch.rand(samples, generator=gen)
        r = r.to(self.device)
        with torch.no_grad():
            exact = self._exact(self._basis, self._radial, r.double()).float()
            return float((self(r) - exact).abs().max() / exact.abs().max().clamp_min(1e-12))


class BlockedEvaluator:
    """Evaluate ``model`` on a neighbour graph in blocks of about ``block_edges`` edges."""

    #: edges per block for the compiled code on a CPU (inductor parallelises each block over the cores itself)
    CPU_COMPILED_BLOCK_EDGES = 1 << 15

    def __init__(self, module: torch.nn.Module, block_edges: int = 4096, cutoff: float | None = None,
                 tensor_products: list | None = None, threads: int | None = None,
                 compile: bool | str | None = None, aggregate: str | None = None, aot: tuple | None = None):
        self.module = module
        #: ``(model sha256, cache directory, build)``: a CPU's compiled layers come from ahead-of-time compiled
        #: packages there (:mod:`trajden.model.aot`; built when missing if ``build``, else ``torch.compile``)
        self.aot = aot if aot is not None and aot[0] and aot[1] is not None else None
        #: whether the compiled layers are ahead-of-time packages
        self.aot_used = False
        #: the compiled function to run (``"layer"``, ``"atomic"``, ``"padded"``; ``trajden.evaluator.aggregate``),
        #: ``None``: the device's choice (:func:`compiled_names`)
        self.forced_aggregate = aggregate
        self.block_edges = int(block_edges)
        #: CPU threads over blocks (each block single-threaded, so results do not depend on it); ``None``:
        #: the calling thread's ``torch.get_num_threads()``
        self.threads = threads
        #: per layer, a replacement for ``layer.tp`` with ``forward`` (messages in its own column order) and
        #: ``standard`` (summed messages back to the tensor product's order), e.g. :class:`trajden.model.fused.FusedTP`
        self.tensor_products = tensor_products
        self.radial_tables = None
        #: per layer, ``{name: fn}``: the ``torch.compile``'d functions of :func:`compile_aggregates` (fast path
        #: only; ``compile=None``: on CUDA): ``"layer"`` (a CPU's), or ``"atomic"`` and ``"padded"`` (a GPU's)
        self.compiled = None
        #: which compiled function runs: ``"layer"``, ``"atomic"`` or ``"padded"`` (``aggregate``, else
        #: :func:`choose_aggregate`); ``aggregate_times``: a GPU's timing of its two sums (s per call)
        self.aggregate_impl = None
        self.aggregate_times = None
        #: with ``compile="auto"``: s per evaluator call on a probe frame, ``{"eager": .., "compiled": ..}``
        #: (the compiled code is dropped when it is not clearly faster; see :func:`compiled_is_faster`)
        self.compile_times = None
        self.cutoff = float(cutoff) if cutoff is not None else float(getattr(module, "cutoff", float("inf")))
        #: where the module's weights live; the probe, the radial tables and every block run there
        self.device = module_device(module)
        try:
            children = dict(module.named_children())
            layer_dict = dict(children["layers"].named_children())
            self.layers = [layer_dict[str(i)] for i in range(len(layer_dict))]
            self.embedding, self.sh, self.basis, self.head = (
                children["embedding"], children["sh"], children["basis"], children["head"])
            self.inv_sqrt_nb = [float(layer.inv_sqrt_nb) for layer in self.layers]
            self.output_scale = float(module.output_scale)
            self.supported = bool(self.cutoff < float("inf")) and self._probe()
            if self.supported and tensor_products is not None:  # the fast path: tabulated radial networks too
                tables = [RadialTable(self.basis, layer.radial, self.cutoff, device=self.device)
                          for layer in self.layers]
                if max(t.max_error() for t in tables) < 1e-4:  # float32 rounding of the MLP itself ~1e-5
                    self.radial_tables = tables
                wanted = compile if compile is not None else self.device.type == "cuda"
                if self.radial_tables is not None and wanted:
                    self._compile(wanted)
        except (KeyError, AttributeError, RuntimeError):
            self.supported = False

    def _compile(self, wanted: bool | str) -> None:
        """Compiled sums (:func:`compile_aggregates`), which sum (:func:`choose_aggregate`), and with
        ``wanted == "auto"`` whether to keep them (:func:`compiled_is_faster`). Optional: any failure here
        warns and leaves the eager fast path, never the monolithic forward."""
        try:
            names = compiled_names(self.tensor_products, self.device, self.forced_aggregate)
            self.compiled = None
            if self.aot is not None and self.device.type == "cpu" and names == ("layer",):
                from trajden.model.aot import aot_layers

                sha, directory, build = self.aot
                self.compiled = aot_layers(self.tensor_products, self.radial_tables, self.inv_sqrt_nb, sha,
                                           directory, build=build)
                self.aot_used = self.compiled is not None
            if not self.compiled:
                self.compiled = compile_aggregates(self.tensor_products, self.radial_tables, self.device, names)
            if self.compiled:
                self.aggregate_impl, self.aggregate_times = choose_aggregate(
                    self.compiled, self.tensor_products, self.radial_tables, self.device)
            if self.compiled and wanted == "auto":
                if self.aot_used:  # measured once per machine and model, kept beside the packages
                    from trajden.model.aot import probe_times

                    faster, self.compile_times = probe_times(self.aot[1], self.aot[0],
                                                             lambda: compiled_is_faster(self))
                else:
                    faster, self.compile_times = compiled_is_faster(self)
                if not faster:
                    self.compiled, self.aot_used = None, False
        except Exception as err:  # noqa: BLE001 - an optional speed-up: any failure -> the eager fast path
            warnings.warn(f"compiled evaluation set-up failed ({type(err).__name__}: {err}); the eager fast "
                          "path is used", stacklevel=3)
            self.compiled, self.aggregate_impl, self.aot_used = None, None, False

    @property
    def mode(self) -> str:
        """``"fast"`` (fused tensor products, tabulated radial networks; ``"fast+compiled-atomic"`` /
        ``"fast+compiled-padded"``: their gather, products and sums fused by ``torch.compile``, with that
        sum (a GPU's); ``"fast+compiled-layer"``: on a CPU, each layer's whole block compiled (``"fast+aot-layer"``:
        compiled ahead of time, :mod:`trajden.model.aot`)
        (:meth:`~trajden.model.fused.FusedTP.block`: harmonics, per-row sums, linears, gate), in blocks of
        about :attr:`CPU_COMPILED_BLOCK_EDGES` edges, each parallelised by the compiled code itself),
        ``"blocked"`` (the model's own submodules, block by block) or ``"forward"`` (the monolithic forward:
        no memory bound)."""
        if not self.supported:
            return "forward"
        if self.tensor_products is None or self.radial_tables is None:
            return "blocked"
        if not self.compiled:
            return "fast"
        return ("fast+aot-" if self.aot_used else "fast+compiled-") + self.aggregate_impl

    @property
    def compiles_layers(self) -> bool:
        """Whether each layer's whole block runs compiled (:meth:`~trajden.model.fused.FusedTP.block`: a
        CPU's default; ``aggregate="atomic"`` or ``"padded"`` compiles the sums alone, the paths a GPU
        takes, so that they are tested on CPUs too)."""
        return bool(self.compiled) and self.aggregate_impl == "layer"

    def _probe(self) -> bool:
        """Check on a small random cluster that the blocked evaluation reproduces ``forward``."""
        from trajden.neighbors import build_graph

        gen = torch.Generator().manual_seed(0)
        pos = (torch.rand(24, 3, generator=gen) * 2.5).double().numpy()
        graph = build_graph(pos, 20.0 * torch.eye(3).double().numpy(), self.cutoff, device=self.device, sort=True)
        x = torch.as_tensor(pos, dtype=torch.float32, device=self.device)
        types = torch.zeros(24, dtype=torch.long, device=self.device)
        try:
            with torch.no_grad():
                ref = self.module(graph.edge_vec(x), graph.src, graph.dst, types)
                self.supported = True
                block, self.block_edges = self.block_edges, 7
                try:
                    out = self(x, graph, types)
                finally:
                    self.block_edges = block
        except (RuntimeError, ValueError, TypeError, IndexError):
            return False
        return bool(torch.allclose(out, ref, atol=1e-5, rtol=1e-4))

    @torch.no_grad()
    def __call__(
        self,
        positions: torch.Tensor,
        graph: Graph,
        types: torch.Tensor,
        active: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted displacements (N, 3); rows outside ``active`` (bool mask) are zero when it is given.

        ``graph`` must have its edges sorted by ``dst`` (``build_graph(sort=True)``); edges longer than the
        model's cutoff (a neighbour-list skin) are dropped here.
        """
        vec = graph.edge_vec(positions)
        keep = torch.nonzero((vec * vec).sum(-1) < self.cutoff**2).squeeze(1)  # one nonzero for the three
        src, dst, vec = graph.src.index_select(0, keep), graph.dst.index_select(0, keep), vec.index_select(0, keep)
        n = positions.shape[0]
        if not self.supported:
            out = self.module(vec, src, dst, types)
            return out if active is None else out * active.unsqueeze(-1)
        if active is not None and not bool(active.any()):
            return torch.zeros_like(positions)
        n_layers = len(self.layers)
        # needed[l]: atoms whose layer-l output is used (needed[L-1] = active)
        needed: list[torch.Tensor | None] = [None] * n_layers
        if active is not None:
            mask = active.clone()
            needed[n_layers - 1] = mask
            for li in range(n_layers - 2, -1, -1):
                mask = with_neighbours(mask, src, dst)
                needed[li] = mask
        x = self.embedding(types)
        if self.compiles_layers:  # each row's edge slots once for all layers
            spans = self._row_spans(dst, n)
            for li, layer in enumerate(self.layers):
                x = self._layer_rows(li, layer, x, vec, src, spans, needed[li])
            out = self.head(x) * self.output_scale
            return out if active is None else out * active.unsqueeze(-1)
        shared = None
        if self.compiled and self.device.type == "cuda":  # edge lengths and harmonics once for all layers
            shared = (torch.sqrt((vec * vec).sum(-1)), self.sh(vec))
        for li, layer in enumerate(self.layers):
            tp = self.tensor_products[li] if self.tensor_products else None
            table = self.radial_tables[li] if self.radial_tables else None
            fns = self.compiled[li] if self.compiled and table is not None else None
            x = self._layer(layer, self.inv_sqrt_nb[li], x, vec, src, dst, n, needed[li], tp, table, fns, shared)
        out = self.head(x) * self.output_scale
        if active is not None:
            out = out * active.unsqueeze(-1)
        return out

    def _row_spans(self, dst: torch.Tensor, n: int) -> list:
        """Blocks of consecutive atoms with about :attr:`CPU_COMPILED_BLOCK_EDGES` edges each on a CPU
        (:attr:`block_edges` elsewhere; at least one atom): ``(first atom, end atom, first edge, end edge,
        slots)`` with the block's :func:`edge_slots` (edge indices from ``first edge``, as int32)."""
        budget = self.CPU_COMPILED_BLOCK_EDGES if self.device.type == "cpu" else self.block_edges
        return [(n0, n1, e0, e1, edge_slots(dst[e0:e1] - n0, n1 - n0).to(torch.int32))
                for n0, n1, e0, e1 in atom_blocks(dst, n, budget)]

    def _layer_rows(self, li: int, layer, x, vec, src, spans: list, needed) -> torch.Tensor:
        """Layer ``li``'s output for all atoms with its compiled :meth:`~trajden.model.fused.FusedTP.block`,
        block by block (blocks without a ``needed`` atom are skipped; their rows stay zero, unused)."""
        fn, table, tp = self.compiled[li]["layer"], self.radial_tables[li], self.tensor_products[li]
        h = layer.linear_1(x)
        new = torch.zeros(x.shape[0], tp.layer.irreps_out.dim, dtype=x.dtype, device=x.device)
        for n0, n1, e0, e1, slots in spans:
            if needed is not None and not bool(needed[n0:n1].any()):
                continue
            if e1 == e0:  # atoms without neighbours (no edge to gather from): their messages sum to zero
                empty = torch.zeros(n1 - n0, tp.dim_out, dtype=x.dtype, device=x.device)
                new[n0:n1] = tp.update(x[n0:n1], empty, self.inv_sqrt_nb[li])
            else:
                new[n0:n1] = fn(h, x[n0:n1], src[e0:e1], vec[e0:e1], slots, table.table, table.delta,
                                table.r_min, table.step, self.inv_sqrt_nb[li])
        return new

    def _layer(self, layer, inv_sqrt_nb, x, vec, src, dst, n, needed, tp=None, table=None, fns=None,
               shared=None):
        """Layer ``layer``'s output for all ``n`` atoms, block by block; ``fns``: the layer's compiled
        functions (:func:`compile_aggregates`) or ``None`` (eager)."""
        agg_fn = fns[self.aggregate_impl] if fns is not None else None
        h = layer.linear_1(x)
        if needed is not None:
            emask = needed[dst]
            src, dst, vec = src[emask], dst[emask], vec[emask]
            if shared is not None:
                shared = (shared[0][emask], shared[1][emask])
        cpu_compiled = agg_fn is not None and self.device.type == "cpu"
        block_edges = max(self.block_edges, self.CPU_COMPILED_BLOCK_EDGES) if cpu_compiled else self.block_edges
        # (first atom, end atom, first edge, end edge) of each block with work to do
        spans = [span for span in atom_blocks(dst, n, block_edges)
                 if needed is None or bool(needed[span[0] : span[1]].any())]

        @torch.no_grad()  # grad mode is per thread: the pool's threads need it too
        def block(span):
            n0, n1, e0, e1 = span
            v = vec[e0:e1]
            lengths = torch.sqrt((v * v).sum(-1)) if shared is None else shared[0][e0:e1]
            if agg_fn is not None:  # compiled: the radial weights and the messages are never materialised
                y = self.sh(v) if shared is None else shared[1][e0:e1]
                tab = (table.table, table.delta, table.r_min, table.step)
                if self.aggregate_impl == "padded":
                    agg = agg_fn(h, src[e0:e1], y, lengths, edge_slots(dst[e0:e1] - n0, n1 - n0), *tab)
                else:
                    agg = agg_fn(h, src[e0:e1], dst[e0:e1] - n0, y, lengths, *tab, n1 - n0)
            else:
                if table is not None:
                    w = table(lengths)
                else:
                    basis, env = self.basis(lengths)
                    w = layer.radial(basis) * env.unsqueeze(-1)
                msg = (tp if tp is not None else layer.tp)(h[src[e0:e1]], self.sh(v), w)
                agg = torch.zeros(n1 - n0, msg.shape[1], dtype=msg.dtype, device=msg.device)
                agg.index_add_(0, dst[e0:e1] - n0, msg)
            if tp is not None:
                agg = tp.standard(agg)
            return layer.self_connection(x[n0:n1]) + layer.gate(layer.linear_2(agg * inv_sqrt_nb))

        first = block(spans[0] if spans else (0, 0, 0, 0))  # (an empty span gives the output width)
        new = torch.zeros(n, first.shape[1], dtype=first.dtype, device=first.device)
        if spans:
            new[spans[0][0] : spans[0][1]] = first

        def write(span):
            new[span[0] : span[1]] = block(span)

        # compiled CPU code runs its own OpenMP threads over each block: no pool on top of them
        pool = None if cpu_compiled else _block_pool(self.threads, self.device, len(spans) - 1)
        if pool is None:
            for span in spans[1:]:
                write(span)
        else:  # each block is the same single-threaded computation whichever thread runs it
            for _ in pool.map(write, spans[1:]):
                pass
        return new


def atom_blocks(dst: torch.Tensor, n: int, budget: int) -> list[tuple[int, int, int, int]]:
    """Consecutive atoms whose edges (sorted by ``dst``) fit in ``budget`` edges, at least one atom per block:
    ``(first atom, end atom, first edge, end edge)`` covering all ``n`` atoms."""
    cum = torch.cumsum(torch.bincount(dst, minlength=n), 0).tolist()  # edges of atoms < i+1
    blocks = []
    n0 = 0
    while n0 < n:
        e0 = cum[n0 - 1] if n0 > 0 else 0
        n1 = max(n0 + 1, _bisect_right(cum, e0 + budget, n0, n))
        blocks.append((n0, n1, e0, cum[n1 - 1]))
        n0 = n1
    return blocks


def edge_slots(dst_local: torch.Tensor, n_rows: int) -> torch.Tensor:
    """(n_rows, K) edge indices per row for edges sorted by ``dst_local``, -1 past a row's last edge (K: the
    most edges of any row)."""
    e = dst_local.shape[0]
    counts = torch.bincount(dst_local, minlength=n_rows)
    k = max(int(counts.max()) if e else 0, 1)
    starts = torch.cumsum(counts, 0) - counts
    idx = torch.arange(e, device=dst_local.device)
    slots = torch.full((n_rows, k), -1, dtype=torch.long, device=dst_local.device)
    slots[dst_local, idx - starts[dst_local]] = idx
    return slots


def _random_block(tp, table, device, n: int, rows: int, e: int, seed: int):
    """Random inputs of :meth:`FusedTP.aggregate` (edges sorted by row, lengths within the table)."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, tp.dim_in1, generator=gen).to(device)
    src = torch.randint(0, n, (e,), generator=gen).to(device)
    dst = torch.sort(torch.randint(0, rows, (e,), generator=gen)).values.to(device)
    y = torch.randn(e, tp.dim_in2, generator=gen).to(device)
    lengths = (0.8 + 0.7 * torch.rand(e, generator=gen)).to(device)
    return h, src, dst, y, lengths, (table.table, table.delta, table.r_min, table.step)


def random_layer_block(tp, table, device, n: int, rows: int, e: int, seed: int):
    """Random inputs ``(h, x_rows, src, vec, slots)`` of :meth:`FusedTP.block` (the fused product ``tp`` must
    carry its Python layer): :func:`_random_block`'s, with edge vectors of its lengths, random rows and int32
    slots."""
    h, src, dst, y, lengths, _ = _random_block(tp, table, device, n, rows, e, seed)
    vec = torch.nn.functional.normalize(y[:, 1:4] + 0.1, dim=-1) * lengths.unsqueeze(-1)
    x_rows = torch.randn(rows, tp.layer.irreps_in.dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return h, x_rows, src, vec, edge_slots(dst, rows).to(torch.int32)


def compiled_names(tensor_products: list, device: torch.device, forced: str | None = None) -> tuple[str, ...]:
    """Which functions :func:`compile_aggregates` compiles: ``forced`` (``layer``, ``atomic`` or ``padded``;
    ``trajden.evaluator.aggregate``) if given; else on a CPU ``("layer",)`` (where the fused products carry
    their Python layers), on a GPU both sums, ``("atomic", "padded")``, for :func:`choose_aggregate` to time."""
    if forced in ("layer", "atomic", "padded"):
        return (forced,)
    if device.type == "cpu":
        layers = all(getattr(tp, "layer", None) is not None for tp in tensor_products)
        return ("layer",) if layers else ("atomic",)
    return ("atomic", "padded")


def compile_aggregates(tensor_products: list, radial_tables: list, device: torch.device,
                       names: tuple[str, ...] = ("atomic", "padded")) -> list | None:
    """Per layer ``{name: fn}`` for each of ``names``: ``torch.compile``'d (dynamic shapes: one compilation
    serves every block size) :meth:`~trajden.model.fused.FusedTP.aggregate` (``"atomic"``),
    ``aggregate_padded`` (``"padded"``) or the whole layer per block, :meth:`~trajden.model.fused.FusedTP.block`
    (``"layer"``; the fused product must carry its Python layer), each checked against its eager self on
    random inputs on ``device``; ``None`` (the eager path) when compiling fails or the results disagree.

    The compiled sums run in another order than the eager ones (and with atomic adds on a GPU, as
    ``index_add_`` there): results agree to float32 rounding, not bit for bit.
    """
    out = []
    _raise_recompile_limit(len(tensor_products))
    try:
        for li, (tp, table) in enumerate(zip(tensor_products, radial_tables)):
            h, src, dst, y, lengths, tab = _random_block(tp, table, device, 60, 40, 900, seed=li)
            slots = edge_slots(dst, 40)
            calls = {}
            if "atomic" in names:
                calls["atomic"] = (tp.aggregate, (h, src, dst, y, lengths, *tab, 40))
            if "padded" in names:
                calls["padded"] = (tp.aggregate_padded, (h, src, y, lengths, slots, *tab))
            if "layer" in names:
                calls["layer"] = (tp.block, (*random_layer_block(tp, table, device, 60, 40, 900, seed=li), *tab,
                                             0.25))
            fns = {}
            for name, (fn, args) in calls.items():
                fns[name] = torch.compile(fn, dynamic=True, fullgraph=True)
                with torch.no_grad():
                    ref, got = fn(*args), fns[name](*args)
                if not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
                    warnings.warn(f"torch.compile'd tensor products ({name}) disagree with the eager ones: "
                                  "not used", stacklevel=2)
                    return None
            out.append(fns)
    except Exception as err:  # noqa: BLE001 - any compiler failure (no C++ compiler, no Triton, ...) -> eager
        warnings.warn(f"torch.compile of the tensor products failed ({type(err).__name__}: {err}); "
                      "the eager path is used", stacklevel=2)
        return None
    return out


_COMPILED_LAYERS = 0


def _raise_recompile_limit(n_layers: int) -> None:
    """Make room in dynamo's cache for ``n_layers`` more compiled layers.

    Dynamo keys its cache on the code object, so every distinct layer shape (of every model compiled in
    this process) is one more entry of ``FusedTP.aggregate``'s cache. Past ``recompile_limit`` (8 by
    default; six two- or three-layer architectures reached it) a layer would quietly run eager on the
    compiled path's blocks."""
    global _COMPILED_LAYERS
    _COMPILED_LAYERS += n_layers
    config = torch._dynamo.config
    limit = getattr(config, "recompile_limit", None)  # (named cache_size_limit in older torch)
    if limit is not None:
        config.recompile_limit = max(limit, _COMPILED_LAYERS + 8)


def choose_aggregate(compiled: list, tensor_products: list, radial_tables: list,
                     device: torch.device) -> tuple[str, dict | None]:
    """Which of the ``compiled`` functions runs: the only one compiled (a CPU's ``layer``, or the one
    ``aggregate`` names), else the faster of the two compiled sums on a random block of 2**18 edges
    on ``device`` (27 edges per row, like a solid within the cut-off)."""
    if len(compiled[0]) == 1:
        return next(iter(compiled[0])), None
    tp, table, fns = tensor_products[-1], radial_tables[-1], compiled[-1]
    e = 1 << 18
    rows = e // 27
    h, src, dst, y, lengths, tab = _random_block(tp, table, device, 4 * rows, rows, e, seed=7)
    slots = edge_slots(dst, rows)
    runs = {"atomic": lambda: fns["atomic"](h, src, dst, y, lengths, *tab, rows),
            "padded": lambda: fns["padded"](h, src, y, lengths, slots, *tab)}
    times = {}
    with torch.no_grad():
        for name, run in runs.items():
            run()
            times[name] = min(_seconds(run, device) for _ in range(3))
    return min(times, key=times.get), times


def _seconds(run, device: torch.device) -> float:
    """Wall time of ``run()`` on ``device`` (a GPU's queued work included)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def compiled_is_faster(ev: BlockedEvaluator, n_atoms: int = 8000, reps: int = 3,
                       margin: float = 0.85) -> tuple[bool, dict]:
    """Whether ``ev`` with its compiled code evaluates a frame clearly faster (below ``margin`` x the time)
    than with the eager ones: a whole evaluator call, as the denoiser makes it, on a hot fcc crystal of about
    ``n_atoms`` atoms (noise 0.05 nearest-neighbour distances, lengths in the model's unit, about 2**17
    edges within the cut-off). Returns (faster, ``{"eager": s, "compiled": s}``: best of ``reps``
    interleaved calls after a warm-up, so that a machine whose speed drifts favours neither).

    A part alone is not enough to judge: on 2 cores the default model's compiled sums (before the compiled
    layers) timed about as fast as its eager ones, while its whole call was 1.3x slower (the harmonics,
    linears and gates then ran on the compiled path's larger blocks); the margin keeps a near tie on the
    bit-exact eager path."""
    import numpy as np

    from trajden.lattices import add_noise, make_crystal
    from trajden.neighbors import build_graph

    crystal = make_crystal("fcc", n_atoms)
    pos, _ = add_noise(crystal.positions, 0.05, np.random.default_rng(0))
    graph = build_graph(pos, crystal.cell, ev.cutoff, device=ev.device, sort=True)
    x = torch.as_tensor(pos, dtype=torch.float32, device=ev.device)
    types = torch.zeros(len(pos), dtype=torch.long, device=ev.device)
    compiled = ev.compiled
    times = {"eager": float("inf"), "compiled": float("inf")}
    try:
        for rep in range(reps + 1):  # the first round is a warm-up
            for name in times:
                ev.compiled = compiled if name == "compiled" else None
                seconds = _seconds(lambda: ev(x, graph, types), ev.device)
                if rep:
                    times[name] = min(times[name], seconds)
    finally:
        ev.compiled = compiled
    return times["compiled"] < margin * times["eager"], times


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _one_intra_op_thread() -> None:
    torch.get_num_threads()  # torch's lazy per-thread set-up first: it would later reset the count to the default
    torch.set_num_threads(1)


def _in_new_thread(fn):
    """``fn()`` run in a short-lived thread (torch's thread settings of existing threads stay as they are)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def _block_pool(threads: int | None, device: torch.device, n_blocks: int) -> ThreadPoolExecutor | None:
    """A pool of ``threads`` threads (default: this thread's torch intra-op threads) that run one block each,
    with one intra-op thread apiece; ``None`` where that does not apply (GPU, one thread, one block). Each
    calling thread has its own pool (two Dask task threads with 4 torch threads each use 8 cores, as before).

    ``torch.set_num_threads`` in a pool thread also changes the default that threads started later take up;
    the pool's threads are therefore all started at once and the default is put back afterwards.
    """
    threads = torch.get_num_threads() if threads is None else int(threads)
    if device.type != "cpu" or threads <= 1 or n_blocks < 2:
        return None
    key = (threading.get_ident(), threads)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            default = _in_new_thread(torch.get_num_threads)
            pool = ThreadPoolExecutor(threads, thread_name_prefix="trajden-blocks", initializer=_one_intra_op_thread)
            barrier = threading.Barrier(threads)
            for _ in pool.map(lambda _: barrier.wait(timeout=60), range(threads)):  # every thread starts now
                pass
            _in_new_thread(lambda: torch.set_num_threads(default))
            _POOLS[key] = pool
        return pool


def with_neighbours(mask: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``mask`` plus every atom with an edge into a masked atom (a new tensor)."""
    grown = mask.clone()
    grown[src[mask[dst]]] = True
    return grown


def min_edge_length(graph: Graph, positions: torch.Tensor, held: torch.Tensor | None = None) -> float:
    """Shortest edge of ``graph`` at ``positions`` (inf without edges).

    ``held``: (N,) bool, atoms held at their input positions; an edge between two held atoms is not counted
    (its length is the input's, not the denoiser's doing).
    """
    if graph.src.numel() == 0:
        return float("inf")
    vec = graph.edge_vec(positions)
    length = torch.sqrt((vec * vec).sum(-1))
    if held is not None:
        held = held.to(graph.src.device)
        length = length[~(held[graph.src] & held[graph.dst])]
        if length.numel() == 0:
            return float("inf")
    return float(length.min())


def _bisect_right(cum: list[int], value: int, lo: int, hi: int) -> int:
    """First index i in [lo, hi) with cum[i] > value (hi if none): atoms [lo, i) have edges <= value."""
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] > value:
            hi = mid
        else:
            lo = mid + 1
    return lo

