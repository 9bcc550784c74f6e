"""The pipeline with elements: the model chosen by the input's elements, PTM ordering, sublattices, and what no
shipped model covers left raw and flagged."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from trajden import names
from trajden.io.lammps_dump import format_frame
from trajden.lattices import make_crystal


def _dump(path, proto, elements, d_nn=2.5, sigma=0.08, seed=0, n=500, types_only=False):
    c = make_crystal(proto, n, d_nn=d_nn)
    rng = np.random.default_rng(seed)
    pos = c.positions + sigma * d_nn * rng.standard_normal(c.positions.shape)
    el = None if types_only else np.array(elements)[c.types]
    path.write_text(format_frame(pos, c.cell, types=c.types + 1, elements=el))
    return c, pos


def _process(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "trajden.cli", "process", *args, "--serial"],
                          cwd=tmp_path, capture_output=True, text=True)


def test_two_elements_choose_the_two_element_model_and_store_ptm_ordering(tmp_path):
    c, pos = _dump(tmp_path / "b2.dump", "b2", ("Ni", "Al"))
    p = _process(tmp_path, "b2.dump", "--out", "b2.zarr")
    assert p.returncode == 0, p.stderr
    assert "model binary" in p.stderr
    ds = xr.open_zarr(tmp_path / "b2.zarr", consolidated=False)
    assert ds.attrs[names.ATTR_MODEL] == "binary"
    assert set(eval(ds.attrs[names.ATTR_MODEL_SPECIES])) == {"Ni", "Al"}
    order = ds[names.ordering_var()].values[0]
    assert np.mean(order == 5) > 0.99  # B2 (OVITO's PTM ordering code)
    assert np.mean(ds[names.structure_var(names.PTM)].values[0] == names.BCC) > 0.99
    assert int(ds[names.VAR_N_KEPT_RAW].values[0]) == 0


def test_a_forced_one_element_model_on_two_elements_is_one_line_error(tmp_path):
    _dump(tmp_path / "b1.dump", "b1", ("Na", "Cl"))
    p = _process(tmp_path, "b1.dump", "--out", "x.zarr", "--model", "fcc-bcc-hcp-lite")
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert "2 elements in the input" in p.stderr and "knows 1 species" in p.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_three_elements_are_left_raw_and_flagged(tmp_path):
    c = make_crystal("fcc", 400, d_nn=2.55)
    rng = np.random.default_rng(1)
    el = np.array(["Cu", "Ni", "Al"])[rng.integers(0, 3, c.n_atoms)]
    pos = c.positions + 0.2 * rng.standard_normal(c.positions.shape)
    (tmp_path / "t.dump").write_text(format_frame(pos, c.cell, types=np.unique(el, return_inverse=True)[1] + 1,
                                                  elements=el))
    p = _process(tmp_path, "t.dump", "--out", "t.zarr", "--keep-raw")
    assert p.returncode == 0, p.stderr
    assert "model none" in p.stderr and "kept raw" in p.stdout
    ds = xr.open_zarr(tmp_path / "t.zarr", consolidated=False)
    assert int(ds[names.VAR_STATUS].values[0]) == names.FRAME_STATUS_OUT_OF_SCOPE
    assert np.all(ds[names.VAR_SCOPE].values[0] == names.SCOPE_SPECIES)
    np.testing.assert_array_equal(ds[names.VAR_POSITIONS].values[0], ds[names.VAR_POSITIONS_RAW].values[0])


def test_silicon_and_oxygen_choose_the_silica_model_by_name(tmp_path):
    """Si + O: ``silica-networks`` (ELEMENT_MODELS), its species mapped by symbol (Si 0, O 1, whatever the count),
    the noise mostly removed and the Si sublattice cubic diamond."""
    c, noisy = _dump(tmp_path / "s.dump", "beta-cristobalite", ("Si", "O"), d_nn=1.61, n=1500)
    p = _process(tmp_path, "s.dump", "--out", "s.zarr", "--sublattice", "Si")
    assert p.returncode == 0, p.stderr
    assert "model silica-networks" in p.stderr
    ds = xr.open_zarr(tmp_path / "s.zarr", consolidated=False)
    assert ds.attrs[names.ATTR_MODEL] == "silica-networks"
    assert eval(ds.attrs[names.ATTR_MODEL_SPECIES]) == {"Si": 0, "O": 1}
    si = c.types == 0
    assert np.mean(ds[names.sublattice_var()].values[0][si] == names.CUBIC_DIAMOND) > 0.99

    def rms(x):
        d = x - c.positions
        d -= d.mean(axis=0)
        return np.sqrt((d**2).sum(1).mean())

    # 0.08 bonds of noise: about 80 % removed (docs/compounds.md); a model that did nothing would fail
    assert rms(ds[names.VAR_POSITIONS].values[0]) < 0.4 * rms(noisy)


@pytest.mark.parametrize("proto, sub, code", [("beta-cristobalite", "Si", names.CUBIC_DIAMOND)])
def test_sublattice_labels(tmp_path, proto, sub, code):
    c, _ = _dump(tmp_path / "s.dump", proto, ("Si", "O"), d_nn=1.55, sigma=0.0)
    p = _process(tmp_path, "s.dump", "--out", "s.zarr", "--sublattice", sub, "--iterations", "1")
    assert p.returncode == 0, p.stderr
    ds = xr.open_zarr(tmp_path / "s.zarr", consolidated=False)
    lab = ds[names.sublattice_var(raw=True)].values[0]
    assert np.all(lab[c.types == 1] == -1)  # O atoms are not in the Si sublattice
    assert np.all(lab[c.types == 0] == code)
    from trajden.analysis import phase_fractions

    fr = phase_fractions(ds, raw=True, sublattice=True).isel(frame=0)
    assert float(fr.sel(structure="cd")) == pytest.approx(1.0)
    bad = _process(tmp_path, "s.dump", "--out", "t.zarr", "--sublattice", "Ge")
    assert bad.returncode != 0 and "no atom of that element" in bad.stderr


def test_ordering_and_sublattice_reach_plots_and_exports(tmp_path):
    import ase.io

    from trajden.io.export import export_dump, export_extxyz
    from trajden.plotting import plot_fractions

    c, _ = _dump(tmp_path / "b2.dump", "b2", ("Ni", "Al"), sigma=0.05)
    p = _process(tmp_path, "b2.dump", "--out", "b2.zarr", "--sublattice", "Ni")
    assert p.returncode == 0, p.stderr
    ds = xr.open_zarr(tmp_path / "b2.zarr", consolidated=False)
    for method in ("ordering", "sublattice"):
        out = plot_fractions(ds, tmp_path / f"{method}.png", method=method)
        assert (tmp_path / f"{method}.png").stat().st_size > 1000, out
    with pytest.raises(ValueError, match="unknown method"):
        plot_fractions(ds, tmp_path / "x.png", method="cna")
    ni = np.array(["Ni", "Al"])[c.types] == "Ni"
    atoms = ase.io.read(export_extxyz(ds, tmp_path / "b2.extxyz"), index=0)
    assert set(atoms.get_chemical_symbols()) == {"Ni", "Al"}
    np.testing.assert_array_equal(atoms.arrays[names.ordering_var()], ds[names.ordering_var()].values[0])
    sub = atoms.arrays[names.sublattice_var()]
    assert np.all(sub[~ni] == -1) and np.mean(sub[ni] == names.SC) > 0.99  # Ni of B2: simple cubic
    np.testing.assert_array_equal(atoms.arrays[names.VAR_SCOPE], 0)
    header = [ln for ln in open(export_dump(ds, tmp_path / "b2.out.dump")) if ln.startswith("ITEM: ATOMS")][0]
    for v in (names.ordering_var(), names.ordering_var(True), names.sublattice_var(), names.VAR_SCOPE):
        assert f" {v}" in header
    plot = subprocess.run([sys.executable, "-m", "trajden.cli", "plot", "b2.zarr", "--out", "o.png", "--method",
                           "ordering"], cwd=tmp_path, capture_output=True, text=True)
    assert plot.returncode == 0 and (tmp_path / "o.png").exists(), plot.stderr
