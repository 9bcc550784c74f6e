"""Neighbour graphs: the numpy and the torch (GPU) paths of :func:`trajden.neighbors.build_graph` agree, and
agree with a brute-force list."""

import numpy as np
import pytest
import torch

from trajden.lattices import add_noise, make_crystal
from trajden.neighbors import _build_graph_torch, build_graph, spatial_order


def _edges(graph, positions):
    """Edges as an (E, 5) array sorted by (src, dst): src, dst, edge vector (the cells here are thicker than
    twice the cut-off, so each pair has one image)."""
    vec = graph.edge_vec(torch.as_tensor(positions, dtype=torch.float64, device=graph.src.device)).cpu()
    rows = np.column_stack([graph.src.cpu().numpy(), graph.dst.cpu().numpy(), vec.numpy()])
    return _sorted(rows)


def _sorted(rows):
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


@pytest.fixture
def frame():
    c = make_crystal("bcc", reps=(4, 3, 5), d_nn=1.0)
    cell = c.cell.copy()
    cell[1, 0] += 0.7  # triclinic
    pos, _ = add_noise(c.positions, 0.08, np.random.default_rng(3))
    return pos, cell


def test_torch_path_equals_numpy_path(frame):
    pos, cell = frame
    ref = build_graph(pos, cell, 1.5, 0.2)
    got = _build_graph_torch(torch.as_tensor(pos), cell, 1.5, 0.2, torch.device("cpu"), torch.float32)
    assert got.src.dtype == torch.int64 and got.dst.dtype == torch.int64
    assert got.src.numel() == ref.src.numel() > 0
    np.testing.assert_allclose(_edges(got, pos), _edges(ref, pos), atol=1e-6)


def test_graph_matches_brute_force(frame):
    pos, cell = frame
    g = build_graph(pos, cell, 1.2, 0.0)
    # brute force over the 27 neighbouring images (the cell is thicker than the cut-off)
    frac = np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], dtype=float)
    shifts = frac @ cell
    d = pos[None, :, None, :] - pos[:, None, None, :] + shifts[None, None, :, :]  # [i, j, s]: r_j - r_i + s
    r = np.linalg.norm(d, axis=-1)
    i, j, s = np.nonzero((r < 1.2) & (r > 1e-9))
    assert g.src.numel() == len(i)
    brute = np.column_stack([j, i, d[i, j, s]])
    np.testing.assert_allclose(_edges(g, pos), _sorted(brute), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_equals_cpu_graph(frame):
    pos, cell = frame
    ref = build_graph(pos, cell, 1.5, 0.2)
    got = build_graph(torch.as_tensor(pos, device="cuda"), cell, 1.5, 0.2, device="cuda")
    assert got.src.is_cuda
    np.testing.assert_allclose(_edges(got, pos), _edges(ref, pos), atol=1e-6)


def test_sorted_graph_is_the_same_list_sorted_by_centre(frame):
    """``build_graph(sort=True)`` gives the same edges, stably sorted by ``dst``, each with its own periodic
    shift; the torch path (vesin's full list, not the mirrored half list) the same edges per centre."""
    pos, cell = frame
    raw = build_graph(pos, cell, 1.5, 0.2)
    assert 0 < raw.cross.numel() < raw.src.numel()  # some edges cross the cell, most do not
    on_torch = _build_graph_torch(torch.as_tensor(pos), cell, 1.5, 0.2, torch.device("cpu"), torch.float32, True)
    np.testing.assert_array_equal(on_torch.dst.numpy(), np.sort(raw.dst.numpy()))
    np.testing.assert_allclose(_edges(on_torch, pos), _edges(raw, pos), atol=1e-6)
    for g in (build_graph(pos, cell, 1.5, 0.2, sort=True),):
        order = np.argsort(raw.dst.numpy(), kind="stable")
        np.testing.assert_array_equal(g.dst.numpy(), raw.dst.numpy()[order])
        np.testing.assert_array_equal(g.src.numpy(), raw.src.numpy()[order])
        np.testing.assert_array_equal(g.shift.numpy(), raw.shift.numpy()[order])
        x = torch.as_tensor(pos, dtype=torch.float32)
        torch.testing.assert_close(g.edge_vec(x), raw.edge_vec(x)[torch.as_tensor(order)], rtol=0, atol=0)
        assert bool((g.cross[1:] > g.cross[:-1]).all())  # ascending


def test_spatial_order_puts_neighbours_close_in_memory():
    """A permutation, the same for periodic images, that brings a shuffled triclinic crystal's neighbours
    within a few bins of each other in memory (in random order half of them are over a quarter of the frame apart)."""
    c = make_crystal("bcc", reps=(12, 10, 11), d_nn=1.0)
    cell = c.cell.copy()
    cell[1, 0] += 0.7
    rng = np.random.default_rng(4)
    pos, _ = add_noise(c.positions, 0.08, rng)
    pos = pos[rng.permutation(len(pos))]
    order = spatial_order(pos, cell)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(pos)))
    np.testing.assert_array_equal(spatial_order(pos + cell[0] - 2 * cell[2], cell), order)

    def median_gap(p):
        g = build_graph(p, cell, 1.2)
        return float((g.src - g.dst).abs().double().median())

    assert median_gap(pos) > len(pos) / 4
    assert median_gap(pos[order]) < len(pos) / 50


def test_spatial_order_of_degenerate_frames_is_the_identity():
    pos = np.random.default_rng(0).random((5, 3))
    np.testing.assert_array_equal(spatial_order(pos, np.zeros((3, 3))), np.arange(5))
    assert spatial_order(np.zeros((0, 3)), np.eye(3)).tolist() == []


def test_mirrored_half_list_is_the_full_list_in_a_small_cell():
    """In a cell thinner than twice the cut-off (atoms see several images of each other, and of themselves)
    the graph built from vesin's half list holds exactly vesin's full list."""
    from vesin import NeighborList

    c = make_crystal("fcc", reps=(2, 2, 1), d_nn=1.0)
    cell = c.cell.copy()
    cell[2, 0] += 0.4
    pos, _ = add_noise(c.positions, 0.05, np.random.default_rng(5))
    g = build_graph(pos, cell, 1.3, 0.2, sort=True)
    i, j, D = NeighborList(cutoff=1.5, full_list=True).compute(pos, cell, True, "ijD")
    assert np.all(np.diff(g.dst.numpy()) >= 0)
    assert len(i) == g.src.numel() and np.any(i == j)  # self-images are in

    def rows(r):  # (src, dst, vector), sorted on every column (pairs repeat with other shifts here)
        r = np.round(r, 5)
        return r[np.lexsort(r.T[::-1])]

    np.testing.assert_allclose(rows(_edges(g, pos)), rows(np.column_stack([j, i, D])), atol=2e-5)


@pytest.mark.parametrize("pbc", [(True, True, False), (False, True, False), (False, False, False)])
def test_no_images_across_non_periodic_directions(frame, pbc):
    """A slab / wire / particle: pairs are those of a brute-force search over images along periodic vectors only."""
    pos, cell = frame
    cutoff = 1.45
    g = build_graph(pos, cell, cutoff, pbc=pbc)
    images = [np.arange(-1, 2) if p else np.zeros(1, dtype=int) for p in pbc]
    rows = []
    for sx in images[0]:
        for sy in images[1]:
            for sz in images[2]:
                shift = np.array([sx, sy, sz]) @ cell
                d = pos[None, :, :] + shift - pos[:, None, :]  # i -> j + shift
                r = np.linalg.norm(d, axis=-1)
                i, j = np.nonzero((r < cutoff) & (r > 1e-9))
                rows.append(np.column_stack([j, i, d[i, j]]))  # src = neighbour j, dst = centre i
    expected = _sorted(np.concatenate(rows))
    got = _edges(g, pos)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)  # the graph's shifts are float32
    full = build_graph(pos, cell, cutoff)
    assert full.src.numel() > g.src.numel()  # the periodic list has the images this one must not
