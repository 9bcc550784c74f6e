"""Equivariance of the score network: rotations, translations, permutations, periodic images."""

import numpy as np
import pytest
import torch
from e3nn.util.jit import script

from trajden.lattices import add_noise, make_crystal, random_rotation
from trajden.model.network import ScoreNet
from trajden.neighbors import build_graph


def _run(net, pos, cell, types):
    g = build_graph(pos, cell, net.cutoff)
    with torch.no_grad():
        return net(g.edge_vec(torch.tensor(pos, dtype=torch.float32)), g.src, g.dst, torch.as_tensor(types)).numpy()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ScoreNet(num_types=2, cutoff=1.5)
    # make the output non-trivial: perturb every parameter (fresh nets start near zero output)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    c = make_crystal("hcp", 200)
    pos, _ = add_noise(c.positions, 0.1, rng)
    types = rng.integers(0, 2, c.n_atoms)
    return net, pos, c.cell, types, rng


def test_output_nontrivial(setup):
    net, pos, cell, types, _ = setup
    out = _run(net, pos, cell, types)
    assert out.shape == (len(pos), 3)
    assert np.abs(out).mean() > 1e-3


def test_rotation_equivariance(setup):
    net, pos, cell, types, rng = setup
    out = _run(net, pos, cell, types)
    R = random_rotation(rng)
    out_rot = _run(net, pos @ R.T, cell @ R.T, types)
    np.testing.assert_allclose(out_rot, out @ R.T, atol=2e-5 * max(1, np.abs(out).max()))


def test_inversion_gives_polar_vector(setup):
    net, pos, cell, types, _ = setup
    out = _run(net, pos, cell, types)
    out_inv = _run(net, -pos, -cell, types)
    np.testing.assert_allclose(out_inv, -out, atol=2e-5 * max(1, np.abs(out).max()))


def test_translation_and_periodic_image_invariance(setup):
    net, pos, cell, types, rng = setup
    out = _run(net, pos, cell, types)
    shift = rng.random(3) @ cell * 3.7
    images = rng.integers(-2, 3, (len(pos), 3)) @ cell
    np.testing.assert_allclose(_run(net, pos + shift + images, cell, types), out, atol=2e-5)


def test_permutation_equivariance(setup):
    net, pos, cell, types, rng = setup
    out = _run(net, pos, cell, types)
    perm = rng.permutation(len(pos))
    np.testing.assert_allclose(_run(net, pos[perm], cell, types[perm]), out[perm], atol=2e-5)


def test_triclinic_cell_same_as_orthogonal_description(setup):
    """The same periodic crystal described by a sheared (triclinic) cell gives the same output."""
    net, pos, cell, types, _ = setup
    out = _run(net, pos, cell, types)
    sheared = cell.copy()
    sheared[1] = cell[1] + cell[0]  # b' = b + a describes the same lattice
    sheared[2] = cell[2] - cell[1]
    np.testing.assert_allclose(_run(net, pos, sheared, types), out, atol=2e-5)


def test_scripted_matches_eager(setup):
    net, pos, cell, types, _ = setup
    np.testing.assert_allclose(_run(script(net), pos, cell, types), _run(net, pos, cell, types), atol=1e-5)


def test_smooth_at_cutoff_and_blind_beyond_it(setup):
    """Edges beyond the cutoff change nothing; an atom crossing the cutoff changes the output continuously."""
    net, pos, cell, types, _ = setup
    g = build_graph(pos, cell, net.cutoff)
    g_skin = build_graph(pos, cell, net.cutoff, skin=0.4)
    assert len(g_skin.src) > len(g.src)
    t = torch.as_tensor(types)
    p = torch.tensor(pos, dtype=torch.float32)
    with torch.no_grad():
        a = net(g.edge_vec(p), g.src, g.dst, t)
        b = net(g_skin.edge_vec(p), g_skin.src, g_skin.dst, t)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # two atoms alone in a big box, moved across the cutoff: the output tends to zero
    box = np.eye(3) * 50.0
    outs = []
    for r in (net.cutoff - 1e-3, net.cutoff + 1e-3):
        outs.append(np.abs(_run(net, np.array([[0.0, 0, 0], [r, 0, 0]]), box, np.array([0, 1]))).max())
    assert outs[1] == 0.0 and outs[0] < 1e-6
