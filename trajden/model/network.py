"""NequIP-style E(3)-equivariant score network predicting each atom's displacement from its ideal site.

Module contract (nequip style): every block declares ``irreps_in`` and ``irreps_out``; the chain is
checked when the network is built.

The network is a pure function of a neighbour graph::

    ScoreNet.forward(edge_vec (E, 3), edge_src (E,), edge_dst (E,), types (N,)) -> (N, 3)

with ``edge_vec = r[edge_src] - r[edge_dst]`` (minimum-image / periodic shift applied) in units of the
model's nearest-neighbour distance. The output is the predicted noise Delta(r) (a 1o vector per atom),
so one denoising step is ``r <- r - Delta(r)``. Neighbour lists are built outside (see
:mod:`trajden.neighbors`), which keeps the scripted model free of Python dependencies.
"""

from __future__ import annotations

import math

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn


class BesselBasis(nn.Module):
    """``n`` Bessel functions ``sqrt(2/rc) sin(n pi r / rc) / r`` times a smooth polynomial envelope (p=6).

    ``forward`` returns ``(basis (E, n), envelope (E,))``; the envelope and its first derivatives vanish at
    the cutoff, so every edge's contribution goes smoothly to zero there.
    """

    def __init__(self, cutoff: float, n_basis: int = 8, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = float(p)
        self.register_buffer("freq", torch.arange(1, n_basis + 1, dtype=torch.float32) * math.pi / cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = r / self.cutoff
        p = self.p
        env = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * x.pow(p)
            + p * (p + 2.0) * x.pow(p + 1.0)
            - p * (p + 1.0) / 2.0 * x.pow(p + 2.0)
        )
        env = env * (x < 1.0).to(r.dtype)
        rr = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freq * rr) / rr * env.unsqueeze(-1), env


class RadialMLP(nn.Module):
    """Maps the radial basis of each edge to the per-edge tensor-product weights."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Interaction(nn.Module):
    """One message-passing block: linear, 'uvu' convolution with radial weights, gate, self-connection."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_hidden: o3.Irreps,
        n_basis: int,
        radial_hidden: int,
        avg_num_neighbors: float,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        irreps_hidden = o3.Irreps(irreps_hidden)
        wanted = {ir for _, ir in irreps_hidden} | {o3.Irrep("0e")}

        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_edge:
                    if ir_out in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid = o3.Irreps(mid)
        irreps_mid, perm, _ = irreps_mid.sort()
        instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]

        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(
            self.irreps_in, irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial = RadialMLP(n_basis, radial_hidden, self.tp.weight_numel)

        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps > 0 else o3.Irreps("")
        self.gate = e3nn_nn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated)
        self.linear_2 = o3.Linear(irreps_mid.simplify(), self.gate.irreps_in)
        self.self_connection = o3.Linear(self.irreps_in, self.gate.irreps_out)
        self.irreps_out = self.gate.irreps_out
        self.inv_sqrt_nb = 1.0 / math.sqrt(avg_num_neighbors)

    def forward(
        self,
        x: torch.Tensor,
        sh: torch.Tensor,
        basis: torch.Tensor,
        envelope: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
    ) -> torch.Tensor:
        h = self.linear_1(x)
        # the radial MLP has biases: multiply by the envelope so messages vanish smoothly at the cutoff
        weights = self.radial(basis) * envelope.unsqueeze(-1)
        messages = self.tp(h[edge_src], sh, weights)
        agg = torch.zeros(x.shape[0], messages.shape[1], dtype=x.dtype, device=x.device)
        agg = agg.index_add(0, edge_dst, messages) * self.inv_sqrt_nb
        return self.self_connection(x) + self.gate(self.linear_2(agg))


class ScoreNet(nn.Module):
    """The score network (see the module docstring for the contract).

    Parameters
    ----------
    num_types : number of species (type embedding rows)
    cutoff : neighbour cutoff, in nearest-neighbour distances
    hidden : hidden irreps, e.g. ``"16x0e+8x1o+4x2e"``
    n_layers : interaction blocks
    lmax : spherical harmonics order of the edges
    n_basis : Bessel functions
    radial_hidden : width of the radial MLPs
    avg_num_neighbors : normalisation of the summed messages
    output_scale : multiplies the output (the typical noise amplitude, helps the start of training)
    """

    def __init__(
        self,
        num_types: int = 1,
        cutoff: float = 1.5,
        hidden: str = "16x0e+8x1o+4x2e",
        n_layers: int = 3,
        lmax: int = 2,
        n_basis: int = 8,
        radial_hidden: int = 32,
        avg_num_neighbors: float = 16.0,
        output_scale: float = 0.1,
    ):
        super().__init__()
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        hidden_irreps = o3.Irreps(hidden)
        n_scalars = sum(mul for mul, ir in hidden_irreps if ir.l == 0)
        self.num_types = num_types
        self.cutoff = float(cutoff)
        self.embedding = nn.Embedding(num_types, n_scalars)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.basis = BesselBasis(cutoff, n_basis)
        irreps = o3.Irreps(f"{n_scalars}x0e")
        layers = []
        for _ in range(n_layers):
            block = Interaction(irreps, self.irreps_sh, hidden_irreps, n_basis, radial_hidden, avg_num_neighbors)
            assert block.irreps_in == irreps, "interaction chain mismatch"
            layers.append(block)
            irreps = block.irreps_out
        self.layers = nn.ModuleList(layers)
        self.head = o3.Linear(irreps, o3.Irreps("1x1o"))
        self.output_scale = float(output_scale)

    def forward(
        self, edge_vec: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor, types: torch.Tensor
    ) -> torch.Tensor:
        lengths = torch.sqrt((edge_vec * edge_vec).sum(-1))
        sh = self.sh(edge_vec)
        basis, envelope = self.basis(lengths)
        x = self.embedding(types)
        for layer in self.layers:
            x = layer(x, sh, basis, envelope, edge_src, edge_dst)
        return self.head(x) * self.output_scale
