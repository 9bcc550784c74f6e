"""Tests for trajden.schema: the one table of store variables is what Store.create makes and what
Store.write_frames writes (dims, dtype, fill value, attributes, shapes), for every option combination."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr

from tests.test_store import N_ATOMS, N_FRAMES, create_kwargs, make_results
from trajden import names, schema
from trajden.store import Store

LAYOUTS = [
    dict(keep_raw=keep_raw, classifiers=classifiers, extra_labels=extra, max_iterations=max_iterations)
    for keep_raw, classifiers, extra, max_iterations in itertools.product(
        (False, True), ((names.ACNA, names.PTM), (names.PTM,)), ((), names.EXTRA_LABEL_VARS), (None, 4))
]


def _layout(kw: dict) -> schema.Layout:
    return schema.Layout(tuple(kw["classifiers"]), kw["keep_raw"], tuple(kw["extra_labels"]), kw["max_iterations"])


def test_every_store_name_is_declared_once():
    declared = [v.name for v in schema.VARIABLES]
    assert len(declared) == len(set(declared)) == len(schema.BY_NAME)
    in_names = {value for key, value in vars(names).items() if key.startswith(("VAR_", "COORD_"))}
    labels = {names.structure_var(c, raw) for c in names.CLASSIFIERS for raw in (False, True)}
    assert set(declared) == in_names | labels | set(names.EXTRA_LABEL_VARS)
    for var in schema.VARIABLES:
        assert set(var.dims) <= {names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL, names.DIM_CELL_VECTOR,
                                 names.DIM_ITERATION}, var.name
        assert var.block == (var.dims[0] == names.DIM_FRAME and var.name not in
                             (names.COORD_TIME, names.COORD_STEP, names.VAR_COMPLETE)), var.name
        assert var.legacy is None or var.legacy in schema.BY_NAME, var.name


@pytest.mark.parametrize("kw", LAYOUTS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_created_store_and_write_blocks_follow_the_table(tmp_path, kw):
    kw = dict(kw, elements=["Fe", "Ni", "", "Fe", "Cr"], frames_per_chunk=3, atoms_per_chunk=2)
    store = Store.create(tmp_path / "s.zarr", **create_kwargs(**kw))
    expected = schema.variables(_layout(kw))
    group = zarr.open_group(str(store.path), mode="r", zarr_format=3)
    assert sorted(group.array_keys()) == sorted(v.name for v in expected)
    assert set(store.label_vars) == {v.name for v in expected if v.dtype == "int8" and v.fill == schema.LABEL_FILL
                                     and v.dims == (names.DIM_FRAME, names.DIM_ATOM) and v.name != names.VAR_SCOPE}
    sizes = {names.DIM_FRAME: N_FRAMES, names.DIM_ATOM: N_ATOMS, names.DIM_SPATIAL: 3, names.DIM_CELL_VECTOR: 3,
             names.DIM_ITERATION: kw["max_iterations"]}
    assert schema.dim_sizes(N_FRAMES, N_ATOMS, kw["max_iterations"]) == sizes
    chunks = {**sizes, names.DIM_FRAME: 3, names.DIM_ATOM: 2}
    for var in expected:
        array = group[var.name]
        assert array.dtype == np.dtype(var.dtype), var.name
        assert tuple(array.metadata.dimension_names) == var.dims, var.name
        assert array.shape == var.shape(sizes) and array.chunks == var.shape(chunks), var.name
        fill = np.asarray(array.fill_value)
        assert np.array_equal(fill, np.asarray(var.fill, dtype=var.dtype), equal_nan=fill.dtype.kind == "f"), var.name
        attrs = dict(array.attrs.asdict())
        if var.name == names.VAR_ELEMENT:  # flag attributes name the elements present
            assert attrs[names.CF_FLAG_VALUES] == [0, 24, 26, 28]
            assert attrs[names.CF_FLAG_MEANINGS] == "unknown Cr Fe Ni"
        else:
            assert attrs == dict(var.attrs), var.name

    results = make_results([0, 1, 2], label_vars=store.label_vars, keep_raw=kw["keep_raw"],
                           history=kw["max_iterations"] or 0)
    blocks = store._blocks(results)
    assert set(blocks) == {v.name for v in expected if v.block}
    for name, block in blocks.items():
        assert block.dtype == group[name].dtype and block.shape == (3,) + group[name].shape[1:], name
    store.write_frames(results)
    assert store.completed()[:3].all()


def test_fresh_blocks_hold_the_fill_values():
    sizes = {names.DIM_FRAME: 99, names.DIM_ATOM: 4, names.DIM_SPATIAL: 3, names.DIM_CELL_VECTOR: 3,
             names.DIM_ITERATION: 5}
    for var in schema.VARIABLES:
        if var.block:
            block = var.block_array(2, sizes)
            assert block.shape == (2,) + var.shape(sizes)[1:] and block.dtype == np.dtype(var.dtype), var.name
            assert np.array_equal(block, np.full_like(block, var.fill), equal_nan=block.dtype.kind == "f"), var.name
    with pytest.raises(ValueError, match="not frame-dimensioned"):
        schema.BY_NAME[names.VAR_TYPE].block_array(2, sizes)


def test_stores_without_later_variables_get_no_blocks_for_them(tmp_path):
    """A store written before scope (and n_kept_raw with it), origin or pbc existed writes frames without them."""
    store = Store.create(tmp_path / "s.zarr", **create_kwargs())
    group = zarr.open_group(str(store.path), mode="r+", zarr_format=3)
    for name in (names.VAR_SCOPE, names.VAR_ORIGIN, names.VAR_PBC):
        del group[name]
    old = Store.open(store.path)
    blocks = old._blocks(make_results([0, 1]))
    assert not {names.VAR_SCOPE, names.VAR_N_KEPT_RAW, names.VAR_ORIGIN, names.VAR_PBC} & set(blocks)
    assert {names.VAR_POSITIONS, names.VAR_EVALUATOR, names.VAR_STATUS} <= set(blocks)
    results = make_results([0, 1])
    results[0].scope = np.zeros(N_ATOMS, np.int8)
    old.write_frames(results)
    assert old.completed()[:2].all()
