"""Training: loss decreases, an interrupted run resumes to the same weights, the export is self-describing."""

import json

import pytest
import torch

from trajden.model.package import load_model
from trajden.train import TrainConfig, train


def _cfg(steps):
    return TrainConfig(
        name="tiny", structures=["fcc", "bcc"], hidden="4x0e+2x1o", n_layers=1, atoms_per_cell=54, steps=steps,
        val_every=4, checkpoint_every=2, lr=5e-3, val_sigmas=[0.1],
    )


def test_resume_gives_identical_model(tmp_path):
    assert train(_cfg(8), tmp_path / "full.pt", log=lambda *_: None)["done"]
    part = train(_cfg(8), tmp_path / "part.pt", log=lambda *_: None, max_steps_this_run=3)
    assert not part["done"] and (tmp_path / "part.pt.ckpt").exists()
    resumed = train(_cfg(8), tmp_path / "part.pt", log=lambda *_: None)
    assert resumed["done"]
    a = load_model(tmp_path / "full.pt").module.state_dict()
    b = load_model(tmp_path / "part.pt").module.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_export_metadata(tmp_path):
    train(_cfg(4), tmp_path / "m.pt", log=lambda *_: None)
    m = load_model(tmp_path / "m.pt")
    md = m.metadata
    assert md["name"] == "tiny" and md["structures"] == ["fcc", "bcc"]
    assert md["sigma_max"] == pytest.approx(0.13) and md["nn_distance"] == 1.0
    assert md["training_config"]["steps"] == 4
    assert json.loads((tmp_path / "m.history.json").read_text())[-1]["step"] == 4


def test_checkpoint_of_other_config_is_refused(tmp_path):
    train(_cfg(8), tmp_path / "m.pt", log=lambda *_: None, max_steps_this_run=2)
    other = _cfg(8)
    other.lr = 1e-3
    with pytest.raises(ValueError, match="another configuration"):
        train(other, tmp_path / "m.pt", log=lambda *_: None)


def test_unknown_yaml_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nsigmamax: 0.1\n")
    with pytest.raises(ValueError, match="unknown training keys"):
        TrainConfig.from_yaml(p)


def _library(path, cells=2):
    """A tiny library: vacancy-free 2x2x2 fcc cells with one atom displaced (stand-ins for relaxed defects)."""
    import numpy as np

    from trajden.lattices import make_crystal

    c = make_crystal("fcc", 32)
    pos = [c.positions.copy() for _ in range(cells)]
    for i, p in enumerate(pos):
        p[0] += 0.1 * (i + 1)
    defect = np.zeros(cells * len(c.positions), dtype=bool)
    defect[0] = True  # the displaced atom of the first cell
    np.savez_compressed(path, names=np.array([f"cell{i}" for i in range(cells)]), defect=defect,
                        lattices=np.array(["fcc"] * cells), counts=np.array([len(p) for p in pos]),
                        positions=np.concatenate(pos).astype(np.float32),
                        cells=np.stack([c.cell] * cells).astype(np.float32), potentials=np.array(["none"]))
    return pos, c.cell


def test_library_cells_train_with_the_noise_as_target_and_are_recorded(tmp_path):
    import numpy as np

    from trajden.train import _sample, load_library

    pos, cell = _library(tmp_path / "lib.npz")
    (tmp_path / "c.yaml").write_text("name: lib\nstructures: [fcc]\nlibrary: lib.npz\nlibrary_fraction: 0.5\n")
    cfg = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert cfg.library == "lib.npz"  # recorded as written (no absolute path in a model's metadata)
    assert cfg.library_path == str((tmp_path / "lib.npz").resolve())
    lib = load_library(cfg.library_path)
    assert lib.names == ["cell0", "cell1"] and len(lib.positions[1]) == 32
    np.testing.assert_allclose(lib.positions[1], pos[1], atol=1e-6)
    cfg.scale_jitter = 0.0
    rng = np.random.default_rng(0)
    vec, src, dst, typ, tgt, w = _sample(cfg, rng, "library:1", sigma=0.0, library=lib)
    # no noise: the target is zero, whatever the cell's (non-lattice) geometry
    assert len(typ) == 32 and float(tgt.abs().max()) == 0.0 and len(vec) > 0
    assert float(w.min()) == float(w.max()) == 1.0
    cfg.library_defect_weight = 5.0
    _, _, _, _, tgt, w = _sample(cfg, rng, "library:0", sigma=0.1, library=lib)
    assert float(w[0]) == 5.0 and float(w[1:].max()) == 1.0
    assert 0.05 < float(tgt.std()) < 0.15
    cfg.steps, cfg.val_every, cfg.checkpoint_every, cfg.hidden, cfg.n_layers = 4, 2, 2, "4x0e+2x1o", 1
    cfg.atoms_per_cell, cfg.val_sigmas = 32, [0.1]
    train(cfg, tmp_path / "m.pt", log=lambda *_: None)
    md = load_model(tmp_path / "m.pt").metadata
    assert md["defect_library"]["cells"] == ["cell0", "cell1"] and len(md["defect_library"]["sha256"]) == 64
    assert md["defect_library"]["file"] == "lib.npz" and md["training_config"]["library"] == "lib.npz"
    last = json.loads((tmp_path / "m.history.json").read_text())[-1]
    assert "defects@0.1" in last and "defect-atoms@0.1" in last


def test_strain_jitter_deforms_the_cell_but_not_the_target(tmp_path):
    import numpy as np

    from trajden.train import _sample, random_strain

    e = random_strain(np.random.default_rng(1), 0.03) - np.eye(3)
    assert np.allclose(e, e.T) and 0 < np.abs(e).max() <= 0.03
    cfg = TrainConfig(structures=["fcc"], atoms_per_cell=32, scale_jitter=0.0, strain_jitter=0.03)
    vec, *_, tgt, _ = _sample(cfg, np.random.default_rng(2), "fcc", sigma=0.0)
    lengths = vec.norm(dim=1)
    nn = lengths[lengths < 1.2]
    # the 12 neighbours are no longer all at one distance, and nothing is to be undone
    assert float(nn.max() - nn.min()) > 0.01 and float(tgt.abs().max()) == 0.0
    cfg.strain_jitter = 0.0
    vec, *_ = _sample(cfg, np.random.default_rng(2), "fcc", sigma=0.0)
    nn = vec.norm(dim=1)[vec.norm(dim=1) < 1.2]
    assert float(nn.max() - nn.min()) < 1e-5


def test_init_from_copies_a_models_weights_and_refuses_another_architecture(tmp_path):
    train(_cfg(4), tmp_path / "a.pt", log=lambda *_: None)
    cfg = _cfg(1)
    cfg.init_from = str(tmp_path / "a.pt")
    cfg.lr = 0.0
    cfg.lr_final = 0.0
    cfg.weight_decay = 0.0
    train(cfg, tmp_path / "b.pt", log=lambda *_: None)
    a = load_model(tmp_path / "a.pt").module.state_dict()
    b = load_model(tmp_path / "b.pt").module.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    other = _cfg(1)
    other.hidden = "8x0e+2x1o"
    other.init_from = str(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="architecture differs"):
        train(other, tmp_path / "c.pt", log=lambda *_: None)


def test_library_errors_name_the_fix(tmp_path):
    (tmp_path / "c.yaml").write_text("name: x\nlibrary: missing.npz\n")
    with pytest.raises(ValueError, match="defect_library.py"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("name: x\nlibrary_fraction: 0.2\n")
    with pytest.raises(ValueError, match="needs a library"):
        TrainConfig.from_yaml(tmp_path / "d.yaml")


def test_a_two_species_library_keeps_its_types_and_swaps_them_only_when_asked(tmp_path):
    import numpy as np

    from trajden.lattices import make_crystal
    from trajden.train import _sample, load_library

    c = make_crystal("beta-cristobalite", 192)
    np.savez_compressed(tmp_path / "net.npz", names=np.array(["net0"]), counts=np.array([len(c.positions)]),
                        positions=c.positions.astype(np.float32), cells=c.cell[None].astype(np.float32),
                        defect=np.zeros(len(c.positions), dtype=bool), types=c.types.astype(np.int8))
    (tmp_path / "c.yaml").write_text("name: si\nstructures: [beta-cristobalite]\nspecies: [Si, O]\n"
                                     "swap_roles: false\nlibrary: net.npz\nlibrary_fraction: 0.5\n")
    cfg = TrainConfig.from_yaml(tmp_path / "c.yaml")
    lib = load_library(cfg.library_path)
    np.testing.assert_array_equal(lib.types[0], c.types)
    rng = np.random.default_rng(0)
    seen = {tuple(_sample(cfg, rng, "library:0", sigma=0.05, library=lib)[3][:2].tolist()) for _ in range(8)}
    assert seen == {(0, 0)}  # Si first, never swapped
    cfg.swap_roles = True
    seen = {tuple(_sample(cfg, rng, "library:0", sigma=0.05, library=lib)[3][:2].tolist()) for _ in range(16)}
    assert seen == {(0, 0), (1, 1)}
    # a one-element library without a types array reads as species 0
    _library(tmp_path / "lib.npz")
    assert all(int(t.max()) == 0 for t in load_library(tmp_path / "lib.npz").types)
