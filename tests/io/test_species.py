"""Species in, species out: elements read from every input kind, --species, the store's element variable,
and exports that ASE, MDAnalysis and OVITO read back with the right symbols."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings

import ase
import ase.build
import ase.io
import numpy as np
import pytest
import xarray as xr

from trajden import names
from trajden.io import export, species
from trajden.io.lammps_dump import format_frame
from trajden.io.readers import Trajectory
from trajden.pipeline import ProcessSettings, run
from trajden.store import Store, StoreError

SETTINGS = ProcessSettings(model="binary", iterations=2, torch_threads=1, ovito_threads=1)


def rocksalt(seed: int = 0, sigma: float = 0.05) -> ase.Atoms:
    """2x2x2 conventional rocksalt NaCl (64 atoms), shuffled atom order, a little noise."""
    rng = np.random.default_rng(seed)
    a = ase.build.bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    a.positions += sigma * rng.standard_normal(a.positions.shape)
    return a[rng.permutation(len(a))]


def write_dump(path, atoms: ase.Atoms, element: bool = True, type_column: bool = True, n_frames: int = 2) -> str:
    """LAMMPS dump of ``atoms`` (Na = type 1, Cl = type 2), with or without the element column."""
    types = np.where(atoms.numbers == 11, 1, 2)
    symbols = np.array(atoms.get_chemical_symbols())
    text = "".join(
        format_frame(atoms.positions, atoms.cell.array, ids=np.arange(1, len(atoms) + 1), types=types, step=10 * k,
                     elements=symbols if element else None)
        for k in range(n_frames)
    )
    if not type_column:
        text = text.replace("ITEM: ATOMS id type element", "ITEM: ATOMS id element")
        text = "\n".join(_drop_second_field(line) for line in text.split("\n"))
    with open(path, "w") as fh:
        fh.write(text)
    return str(path)


def _drop_second_field(line: str) -> str:
    words = line.split(" ")
    if len(words) > 5 and words[0].isdigit():  # an atom line: id type element x y z
        return " ".join([words[0], *words[2:]])
    return line


def trajden_cli(*args):
    return subprocess.run([sys.executable, "-m", "trajden.cli", *map(str, args)], capture_output=True, text=True)


# ---------------------------------------------------------------------------------------------------
# reading


def test_dump_element_column(tmp_path):
    atoms = rocksalt()
    fr = Trajectory(write_dump(tmp_path / "el.dump", atoms)).frame(1)
    assert fr.elements.tolist() == atoms.get_chemical_symbols()
    assert fr.type_elements == {1: "Na", 2: "Cl"}
    assert fr.elements_origin == species.ORIGIN_COLUMN
    np.testing.assert_array_equal(fr.atomic_numbers, atoms.numbers)
    import MDAnalysis as mda

    u = mda.Universe(str(tmp_path / "el.dump"), format="TRAJDEN_LAMMPSDUMP")  # trajden's MDAnalysis parser
    assert u.atoms.elements.tolist() == atoms.get_chemical_symbols()
    # no type column: atoms are typed by element, in order of first appearance
    fr = Trajectory(write_dump(tmp_path / "el_only.dump", atoms, type_column=False)).frame(0)
    assert fr.elements.tolist() == atoms.get_chemical_symbols()
    first = atoms.get_chemical_symbols()[0]
    assert fr.type_elements[1] == first and set(fr.type_elements.values()) == {"Na", "Cl"}


def test_species_flag_maps_types_and_survives_pickling(tmp_path):
    atoms = rocksalt()
    path = write_dump(tmp_path / "t.dump", atoms, element=False)
    bare = Trajectory(path).frame(0)
    assert bare.elements is None and bare.type_elements == {} and bare.elements_origin is None
    with pytest.raises(species.SpeciesError, match=r"t\.dump: frame 0: 2 atom types and no element .*--species"):
        species.require_elements(bare)
    traj = pickle.loads(pickle.dumps(Trajectory(path, species="na, cl")))
    fr = traj.frame(1)
    assert fr.elements.tolist() == atoms.get_chemical_symbols()
    assert fr.type_elements == {1: "Na", 2: "Cl"} and fr.elements_origin == species.ORIGIN_FLAG
    species.require_elements(fr)


@pytest.mark.parametrize(("spec", "element", "match"), [
    ("Na", False, r"t\.dump: frame 0: --species Na names 1 element\(s\) for types 1\.\.1, but the file has atom "
                  r"type 2"),
    ("Na", True, r"--species Na makes type 2 nothing \(too few names\), but the file's element column says Cl"),
    ("Cl,Na", True, r"--species Cl,Na makes type 1 Cl, but the file's element column says Na"),
    ("Na,Qq", False, r"--species Na,Qq: 'Qq' is not an element symbol"),
    (",", False, r"--species ',': no element given"),
])
def test_species_flag_errors(tmp_path, spec, element, match):
    path = write_dump(tmp_path / "t.dump", rocksalt(), element=element)
    with pytest.raises(species.SpeciesError, match=match):
        Trajectory(path, species=spec).frame(0)


def test_bad_element_column_and_two_elements_in_one_type(tmp_path):
    atoms = rocksalt()
    path = write_dump(tmp_path / "e.dump", atoms)
    text = open(path).read()
    with open(tmp_path / "bad.dump", "w") as fh:
        fh.write(text.replace(" Cl ", " Qq ", 1))
    # a name that is no element (LAMMPS' 'X' placeholder): read as MDAnalysis reads it, elements unknown, said once;
    # with two types the run then stops asking for --species (require_elements), never guessing
    bad = Trajectory(str(tmp_path / "bad.dump"))
    frame = bad.frame(0)
    assert frame.elements is None
    assert any("'Qq'" not in w and "Qq" in w and "--species" in w for w in bad.warnings), bad.warnings
    with pytest.raises(species.SpeciesError, match="--species"):
        species.require_elements(frame)
    types = np.ones(len(atoms), dtype=int)  # one type holding Na and Cl
    with open(tmp_path / "mixed.dump", "w") as fh:
        fh.write(format_frame(atoms.positions, atoms.cell.array, types=types,
                              elements=np.array(atoms.get_chemical_symbols())))
    with pytest.raises(species.SpeciesError, match=r"atom type 1 holds atoms of two elements \(Cl and Na\)"):
        Trajectory(str(tmp_path / "mixed.dump")).frame(0)


def test_extxyz_symbols(tmp_path):
    atoms = rocksalt()
    ase.io.write(tmp_path / "a.extxyz", [atoms, atoms], format="extxyz")
    fr = Trajectory(str(tmp_path / "a.extxyz")).frame(1)
    assert fr.elements.tolist() == atoms.get_chemical_symbols()
    assert fr.elements_origin == species.ORIGIN_SYMBOLS
    assert sorted(fr.type_elements.values()) == ["Cl", "Na"]
    assert [fr.type_elements[int(t)] for t in fr.types] == atoms.get_chemical_symbols()
    with pytest.raises(species.SpeciesError, match="element symbols says"):  # the file's symbols win
        Trajectory(str(tmp_path / "a.extxyz"), species="K,Br").frame(0)


def test_pdb_elements_and_gro_names_guessed_by_mdanalysis(tmp_path):
    import MDAnalysis as mda

    atoms = rocksalt()
    symbols = atoms.get_chemical_symbols()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe.empty(len(atoms), trajectory=True)
        u.add_TopologyAttr("names", [s.upper() for s in symbols])
        u.add_TopologyAttr("resnames", ["ION"])
        u.add_TopologyAttr("elements", symbols)
        u.atoms.positions = atoms.positions
        u.dimensions = [5.64 * 2] * 3 + [90.0] * 3
        u.atoms.write(str(tmp_path / "a.pdb"))
        u.atoms.write(str(tmp_path / "a.gro"))
    pdb = Trajectory(str(tmp_path / "a.pdb"))
    fr = pdb.frame(0)
    assert fr.elements.tolist() == symbols and fr.elements_origin == species.ORIGIN_TOPOLOGY
    gro = Trajectory(str(tmp_path / "a.gro"))
    fr = gro.frame(0)
    assert fr.elements.tolist() == symbols and fr.elements_origin == species.ORIGIN_NAMES
    assert any("guessed from the atom names by MDAnalysis" in w for w in gro.warnings)
    fr = Trajectory(str(tmp_path / "a.gro"), species="Na,Cl").frame(0)  # --species replaces a guess
    assert fr.elements_origin == species.ORIGIN_FLAG


def test_element_from_mass():
    assert species.element_from_mass(58.6934) == "Ni"
    assert species.element_from_mass(26.98) == "Al"
    assert species.element_from_mass(58.71) == "Ni"  # old EAM files
    assert species.element_from_mass(40.0) is None  # Ar 39.95 and Ca 40.08 both within reach: not guessed
    assert species.element_from_mass(59.0) is None  # rounded: nothing within 0.05 u
    assert species.element_from_mass(1.0) is None  # LAMMPS' default / lj mass is not hydrogen


def test_lammps_data_masses(tmp_path):
    atoms = rocksalt()
    data = tmp_path / "nacl.data"
    ase.io.write(data, atoms, format="lammps-data", specorder=["Na", "Cl"], masses=True, atom_style="full")
    assert "Masses" in data.read_text()
    # a types-only dump with the data file as topology
    path = write_dump(tmp_path / "t.dump", atoms, element=False)
    traj = Trajectory(path, topology=str(data))
    fr = traj.frame(0)
    assert fr.elements.tolist() == atoms.get_chemical_symbols()
    assert fr.type_elements == {1: "Na", 2: "Cl"} and fr.elements_origin == species.ORIGIN_MASSES
    assert any("taken from the Masses" in w for w in traj.warnings)
    # the data file itself (MDAnalysis DATA reader)
    fr = Trajectory(str(data), format="DATA").frame(0)
    assert fr.type_elements == {1: "Na", 2: "Cl"} and fr.elements_origin == species.ORIGIN_MASSES
    # an ambiguous mass is not guessed: type 2 stays unknown and the input is refused without --species
    text = data.read_text()
    start = text.index("Masses")
    masses = text[start:text.index("Atoms")]
    mass2 = masses.split("\n")[3]
    bad = tmp_path / "bad.data"
    bad.write_text(text.replace(mass2, "2 40.0"))
    traj = Trajectory(path, topology=str(bad))
    fr = traj.frame(0)
    assert fr.elements is None and fr.type_elements == {1: "Na"}
    assert any("type 2 (mass 40)" in w for w in traj.warnings)
    with pytest.raises(species.SpeciesError, match=r"no element for type\(s\) 2;"):
        species.require_elements(fr)
    fr = Trajectory(path, topology=str(bad), species="Na,Cl").frame(0)
    assert fr.type_elements == {1: "Na", 2: "Cl"} and fr.elements_origin == species.ORIGIN_FLAG


# ---------------------------------------------------------------------------------------------------
# processing and the store


@pytest.fixture(scope="module")
def nacl_stores(tmp_path_factory):
    """The same rocksalt frames with an element column (Python API) and types-only with --species (CLI)."""
    tmp = tmp_path_factory.mktemp("nacl")
    atoms = rocksalt()
    el = write_dump(tmp / "el.dump", atoms)
    bare = write_dump(tmp / "t.dump", atoms, element=False)
    run(Trajectory(el), [0, 1], str(tmp / "el.zarr"), SETTINGS, progress=False)
    r = trajden_cli("process", bare, "--species", "Na,Cl", "--out", tmp / "flag.zarr", "--serial", "--quiet",
                    "--model", "binary", "-k", "2", "--torch-threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "species    type 1 Na, type 2 Cl (--species)" in r.stdout
    return atoms, tmp


def test_store_records_elements_readable_without_trajden(nacl_stores):
    atoms, tmp = nacl_stores
    for name in ("el.zarr", "flag.zarr"):
        ds = xr.open_zarr(tmp / name, consolidated=False)
        var = ds[names.VAR_ELEMENT]
        assert var.dims == (names.DIM_ATOM,)
        np.testing.assert_array_equal(var.values, atoms.numbers)
        assert list(var.attrs[names.CF_FLAG_VALUES]) == [11, 17]
        assert var.attrs[names.CF_FLAG_MEANINGS] == "Na Cl"
        assert json.loads(ds.attrs[names.ATTR_SPECIES]) == {"1": "Na", "2": "Cl"}
        assert json.loads(ds.attrs[names.ATTR_RUN_CONFIG])[names.ATTR_SPECIES] == {"1": "Na", "2": "Cl"}
        assert bool(ds[names.VAR_COMPLETE].all())
    a = xr.open_zarr(tmp / "el.zarr", consolidated=False)
    b = xr.open_zarr(tmp / "flag.zarr", consolidated=False)
    assert a.attrs[names.ATTR_SPECIES_SOURCE] == species.ORIGIN_COLUMN
    assert b.attrs[names.ATTR_SPECIES_SOURCE] == species.ORIGIN_FLAG
    xr.testing.assert_identical(a[names.VAR_ELEMENT], b[names.VAR_ELEMENT])
    store = Store.open(tmp / "flag.zarr", mode="r")
    assert store.elements.tolist() == atoms.get_chemical_symbols()
    assert store.type_elements == {1: "Na", 2: "Cl"}


def test_types_only_multi_type_without_species_is_one_clean_line(nacl_stores):
    _, tmp = nacl_stores
    out = tmp / "refused.zarr"
    r = trajden_cli("process", tmp / "t.dump", "--out", out, "--serial", "--quiet", "--model", "fcc-bcc-hcp-lite")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "t.dump: frame 0: 2 atom types and no element" in lines[0] and "--species" in lines[0]
    assert not out.exists()
    r = trajden_cli("process", tmp / "t.dump", "--species", "Na", "--out", out, "--serial", "--quiet")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "--species Na names 1 element(s)" in r.stderr and not out.exists()


def test_resume_refuses_other_species_and_old_stores_still_resume(nacl_stores, tmp_path):
    import zarr

    atoms, tmp = nacl_stores
    bare = str(tmp / "t.dump")
    with pytest.raises(StoreError, match=r"run_config\.species.*atom elements differ"):
        run(Trajectory(bare, species="Cl,Na"), [0, 1], str(tmp / "flag.zarr"), SETTINGS, progress=False)
    # a single-type input without element information: accepted, recorded as unknown
    one = tmp_path / "one.dump"
    one.write_text(format_frame(atoms.positions, atoms.cell.array))
    out = tmp_path / "one.zarr"
    run(Trajectory(str(one)), [0], str(out), SETTINGS, progress=False)
    ds = xr.open_zarr(out, consolidated=False)
    assert (ds[names.VAR_ELEMENT].values == names.ELEMENT_UNKNOWN).all()
    assert ds[names.VAR_ELEMENT].attrs[names.CF_FLAG_MEANINGS] == names.ELEMENT_UNKNOWN_NAME
    assert json.loads(ds.attrs[names.ATTR_SPECIES]) == {} and ds.attrs[names.ATTR_SPECIES_SOURCE] == ""
    # ... and the same input with --species Cu is another run
    with pytest.raises(StoreError, match=r"run_config\.species\.1 not in the store"):
        run(Trajectory(str(one), species="Cu"), [0], str(out), SETTINGS, progress=False)
    # a store from before elements were stored: no element variable, no species in its run config
    group = zarr.open_group(str(out), mode="r+", zarr_format=3)
    del group[names.VAR_ELEMENT]
    config = json.loads(group.attrs[names.ATTR_RUN_CONFIG])
    del config[names.ATTR_SPECIES]
    config.pop("species_map", None)  # nor the model's species map (added with the two-element model)
    group.attrs[names.ATTR_RUN_CONFIG] = json.dumps(config)
    for key in (names.ATTR_SPECIES, names.ATTR_SPECIES_SOURCE):
        del group.attrs[key]
    old = Store.open(out, mode="r")
    assert old.elements is None and old.type_elements == {}
    summary = run(Trajectory(str(one), species="Cu"), [0], str(out), SETTINGS, progress=False)
    assert summary.frames_skipped == 1 and summary.frames_done == 0
    assert names.VAR_ELEMENT not in xr.open_zarr(out, consolidated=False)


# ---------------------------------------------------------------------------------------------------
# exports


def _ovito_symbols(path) -> tuple[list[str], np.ndarray]:
    from ovito.io import import_file

    data = import_file(str(path)).compute()
    ptypes = data.particles.particle_types
    order = np.argsort(np.asarray(data.particles.identifiers))
    names_by_id = {t.id: t.name for t in ptypes.types}
    syms = [names_by_id[int(t)] for t in np.asarray(ptypes)[order]]
    return syms, np.asarray(data.particles.positions)[order]


def test_exports_write_element_symbols(nacl_stores, tmp_path):
    import MDAnalysis as mda

    atoms, tmp = nacl_stores
    ds = xr.open_zarr(tmp / "flag.zarr", consolidated=False)
    symbols = atoms.get_chemical_symbols()
    den = ds[names.VAR_POSITIONS].values[-1]

    xyz = export.export_extxyz(ds, tmp_path / "o.extxyz")
    got = ase.io.read(xyz, index=-1, format="extxyz")
    assert got.get_chemical_symbols() == symbols  # not the type numbers as atomic numbers (type 1 was H)
    np.testing.assert_allclose(got.positions, den, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(xyz, format="XYZ")
        u.trajectory[-1]
        assert u.atoms.elements.tolist() == symbols
        np.testing.assert_allclose(u.atoms.positions, den, atol=1e-4)
    syms, pos = _ovito_symbols(xyz)
    assert syms == symbols
    np.testing.assert_allclose(pos, den, atol=1e-4)

    dump = export.export_dump(ds, tmp_path / "o.dump")
    header = [line for line in open(dump) if line.startswith("ITEM: ATOMS")][0]
    assert header.split()[2:5] == ["id", "type", "element"]
    got = ase.io.read(dump, index=-1, format="lammps-dump-text")
    assert got.get_chemical_symbols() == symbols
    np.testing.assert_allclose(got.positions, den, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(dump, format="LAMMPSDUMP")
        u.trajectory[-1]
        assert u.atoms.elements.tolist() == symbols
        np.testing.assert_allclose(u.atoms.positions, den, atol=1e-4)
    syms, pos = _ovito_symbols(dump)
    assert syms == symbols
    np.testing.assert_allclose(pos, den, atol=1e-4)
    # trajden reads its own export back with the same elements
    fr = Trajectory(dump).frame(-1)
    assert fr.elements.tolist() == symbols and fr.type_elements == {1: "Na", 2: "Cl"}


def test_elements_agree_between_frames_and_files(tmp_path):
    atoms = rocksalt()
    path = write_dump(tmp_path / "el.dump", atoms, n_frames=1)
    frame1 = format_frame(atoms.positions, atoms.cell.array, ids=np.arange(1, len(atoms) + 1),
                          types=np.where(atoms.numbers == 11, 1, 2), step=10,
                          elements=np.where(atoms.numbers == 11, "Cl", "Na"))  # same types, elements exchanged
    both = tmp_path / "both.dump"
    both.write_text(open(path).read() + frame1)
    traj = Trajectory(str(both))
    assert traj.frame(0).type_elements == {1: "Na", 2: "Cl"}
    with pytest.raises(species.SpeciesError, match=r"both\.dump: frame 1: atom type 1 is Cl, but Na in frame 0"):
        traj.frame(1)
    # a second file without the element column: frame 0's type -> element map names its atoms
    bare = write_dump(tmp_path / "t.dump", atoms, element=False, n_frames=1)
    with open(bare) as fh:
        text = fh.read().replace("ITEM: TIMESTEP\n0\n", "ITEM: TIMESTEP\n20\n")
    with open(bare, "w") as fh:
        fh.write(text)
    traj = Trajectory([path, bare])
    fr = traj.frame(1)
    assert fr.elements.tolist() == atoms.get_chemical_symbols() and fr.elements_origin == species.ORIGIN_COLUMN
