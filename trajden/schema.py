"""The store's variables, declared once: dims, dtype, fill value, CF attributes and when a store has each.

:data:`VARIABLES` holds one :class:`Variable` per array a trajden store can hold (coordinates included).  Their
names, dimension names and label codes come from :mod:`trajden.names`; this module only says what each array
looks like.  :class:`trajden.store.Store` uses the table twice:

* ``Store.create`` makes one zarr array per variable that :func:`variables` lists for the run's
  :class:`Layout`, with the variable's dims (as ``dimension_names``), dtype, fill value and attributes; its
  shape and chunks come from the sizes of the dims (:meth:`Variable.shape`);
* ``Store.write_frames`` fills one block per variable written frame by frame (``block``) that the store has,
  ``np.full`` of the variable's fill value and dtype (:meth:`Variable.block_array`), before copying the frames'
  results in.

Contract: a variable's entry is what is on disk.  Changing an entry changes the store format (``STORE_FORMAT``
in :mod:`trajden.store`); a variable added later gets ``legacy`` so that stores written before it still open.

The fill value is what a never-written element reads as: NaN for floats, -1 (:data:`LABEL_FILL`,
:data:`INT_FILL`) for labels and other integer codes (so "not written" is never label 0 = "other" or status
0 = "converged"), 0 (unknown) for ``element``, False for ``complete``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajden import names

__all__ = ["BY_NAME", "INT_FILL", "LABEL_FILL", "Layout", "VARIABLES", "Variable", "dim_sizes", "flag_attrs",
           "variables"]

#: fill value of the label variables
LABEL_FILL = -1
#: fill value of the other integer variables (codes and counts)
INT_FILL = -1

_UNITS_ANGSTROM = "angstrom"


@dataclass(frozen=True)
class Layout:
    """The choices made when a store is created that decide which variables it has.

    Parameters
    ----------
    classifiers
        Classifiers (:data:`trajden.names.CLASSIFIERS`) whose labels the store holds, after and before denoising.
    keep_raw
        Whether the store keeps the positions as read (``positions_raw``).
    extra_labels
        Label variables from :data:`trajden.names.EXTRA_LABEL_VARS` the store holds.
    max_iterations
        Length of the ``iteration`` dim; None: no per-iteration diagnostics (``rms_history``,
        ``mobile_fraction``).
    """

    classifiers: tuple[str, ...] = names.CLASSIFIERS
    keep_raw: bool = False
    extra_labels: tuple[str, ...] = ()
    max_iterations: int | None = None


def _always(layout: Layout) -> bool:
    return True


def _keep_raw(layout: Layout) -> bool:
    return layout.keep_raw


def _history(layout: Layout) -> bool:
    return layout.max_iterations is not None


@dataclass(frozen=True)
class Variable:
    """One store array.

    Parameters
    ----------
    name
        The array's name (from :mod:`trajden.names`).
    dims
        Its dimension names, in order (``Store.create`` writes them as zarr ``dimension_names``).
    dtype
        Its numpy dtype name.
    fill
        Its zarr fill value: what an element never written reads as.
    attrs
        Its attributes (CF), in the order they are written; None for ``element``, whose flag attributes name
        the atomic numbers present, so ``Store.create`` makes them from the elements.
    when
        Whether a store created with a :class:`Layout` has the variable.
    block
        True if ``Store.write_frames`` writes it, one row per frame; False for the variables written when the
        store is created (coordinates, per-atom variables) and for ``complete`` (marked after the rest).
    legacy
        None if every store of a layout that has the variable holds it.  Otherwise the variable was added after
        stores were first written: an existing store has it only if it holds the array named ``legacy`` (the
        variable itself, or one added together with it), and stores without it open and resume.
    """

    name: str
    dims: tuple[str, ...]
    dtype: str
    fill: Any
    attrs: Mapping[str, Any] | None
    when: Callable[[Layout], bool] = _always
    block: bool = True
    legacy: str | None = None

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The array's shape (or chunk shape) given the size of each of its dims."""
        return tuple(int(sizes[d]) for d in self.dims)

    def block_array(self, n_frames: int, sizes: Mapping[str, int]) -> np.ndarray:
        """A write block of ``n_frames`` frames holding the fill value (the variable's dims start with frame)."""
        if self.dims[0] != names.DIM_FRAME:
            raise ValueError(f"{self.name} is not frame-dimensioned")
        return np.full((int(n_frames),) + self.shape(sizes)[1:], self.fill, self.dtype)


def dim_sizes(n_frames: int, n_atoms: int, n_iterations: int | None) -> dict[str, int | None]:
    """The size of each store dim (or, given chunk lengths, of each chunk's dim) for :meth:`Variable.shape`.

    Parameters
    ----------
    n_frames, n_atoms
        Sizes of the ``frame`` and ``atom`` dims (frames and atoms per chunk for chunk shapes).
    n_iterations
        Size of the ``iteration`` dim (the whole dim is one chunk); None where the store has none.

    Returns
    -------
    dict
        dim name -> size; ``spatial`` and ``cell_vector`` are 3.
    """
    return {names.DIM_FRAME: int(n_frames), names.DIM_ATOM: int(n_atoms), names.DIM_SPATIAL: 3,
            names.DIM_CELL_VECTOR: 3, names.DIM_ITERATION: n_iterations}


def flag_attrs(meanings: Mapping[int, str], codes: Sequence[int], long_name: str, comment: str) -> dict:
    """CF flag attributes of a code variable: ``codes`` (in this order) and their ``meanings``."""
    return {
        names.CF_LONG_NAME: long_name,
        names.CF_FLAG_VALUES: [int(c) for c in codes],
        names.CF_FLAG_MEANINGS: " ".join(meanings[c] for c in codes),
        names.CF_COMMENT: comment,
    }


def _with_classifier(classifier: str) -> Callable[[Layout], bool]:
    """``when`` of a variable a store has if ``classifier`` is among its classifiers."""
    return lambda layout: classifier in layout.classifiers


def _with_extra_label(name: str) -> Callable[[Layout], bool]:
    """``when`` of a variable a store has if ``name`` is among its extra label variables."""
    return lambda layout: name in layout.extra_labels


def _label_variable(name: str, *, raw: bool, subject: str, meanings: Mapping[int, str], codes: Sequence[int],
                    codes_comment: str, when: Callable[[Layout], bool], unwritten: str = "not written"
                    ) -> Variable:
    """A per-atom label variable: int8 ``(frame, atom)``, fill :data:`LABEL_FILL`, CF flag attributes.

    Parameters
    ----------
    name
        The variable's name.
    raw
        Whether it holds the labels before (True) or after (False) denoising.
    subject
        What is labelled; the long name is ``"<subject> before|after denoising"``.
    meanings, codes
        The label codes' names and the codes listed as flag values, in this order (:func:`flag_attrs`).
    codes_comment
        What the codes are; the comment is ``"<codes_comment>; -1 = <unwritten>"``.
    when
        Whether a store created with a :class:`Layout` has the variable.
    unwritten
        What the fill value :data:`LABEL_FILL` means.

    Returns
    -------
    Variable
    """
    stage = "before" if raw else "after"
    return Variable(
        name, (names.DIM_FRAME, names.DIM_ATOM), "int8", LABEL_FILL,
        flag_attrs(meanings, codes, f"{subject} {stage} denoising", f"{codes_comment}; {LABEL_FILL} = {unwritten}"),
        when=when)


_F, _A, _S, _C = names.DIM_FRAME, names.DIM_ATOM, names.DIM_SPATIAL, names.DIM_CELL_VECTOR
_ANG = {names.CF_UNITS: _UNITS_ANGSTROM}

#: every variable a store can hold, in the order ``Store.create`` makes them
VARIABLES: tuple[Variable, ...] = (
    # coordinates and per-atom variables, written when the store is created
    Variable(names.COORD_TIME, (_F,), "float64", np.nan, {names.CF_UNITS: "ps", names.CF_LONG_NAME: "time"},
             block=False),
    Variable(names.COORD_STEP, (_F,), "int64", INT_FILL, {names.CF_LONG_NAME: "MD timestep"}, block=False),
    Variable(names.COORD_ATOM_ID, (_A,), "int64", INT_FILL, {names.CF_LONG_NAME: "atom id"}, block=False),
    Variable(names.VAR_TYPE, (_A,), "int32", INT_FILL, {names.CF_LONG_NAME: "atom type"}, block=False),
    Variable(names.VAR_ELEMENT, (_A,), "int16", names.ELEMENT_UNKNOWN, None, block=False,
             legacy=names.VAR_ELEMENT),
    # per-frame results
    Variable(names.VAR_POSITIONS, (_F, _A, _S), "float32", np.nan,
             {**_ANG, names.CF_LONG_NAME: "denoised atom positions"}),
    Variable(names.VAR_POSITIONS_RAW, (_F, _A, _S), "float32", np.nan,
             {**_ANG, names.CF_LONG_NAME: "atom positions as read"}, when=_keep_raw),
    # label variables: per classifier, then PTM's chemical ordering and sublattice labels; after, then before
    *(_label_variable(names.structure_var(classifier, raw), raw=raw, subject=f"{classifier} structure type",
                      meanings=names.STRUCTURE_NAMES, codes=codes, codes_comment="OVITO structure type codes",
                      when=_with_classifier(classifier))
      for classifier, codes in ((names.ACNA, names.ACNA_CODES), (names.PTM, names.PTM_CODES))
      for raw in (False, True)),
    *(_label_variable(names.ordering_var(raw), raw=raw, subject="PTM chemical ordering",
                      meanings=names.ORDERING_NAMES, codes=sorted(names.ORDERING_NAMES),
                      codes_comment="OVITO PTM ordering type codes", when=_with_extra_label(names.ordering_var(raw)))
      for raw in (False, True)),
    *(_label_variable(names.sublattice_var(raw), raw=raw, subject="PTM structure type of one element's sublattice",
                      meanings=names.STRUCTURE_NAMES, codes=names.PTM_CODES,
                      codes_comment="OVITO structure type codes",
                      unwritten="not written or not in the sublattice (root attribute 'sublattice' names its element)",
                      when=_with_extra_label(names.sublattice_var(raw)))
      for raw in (False, True)),
    Variable(names.VAR_DISPLACEMENT, (_F, _A), "float32", np.nan,
             {**_ANG, names.CF_LONG_NAME: "|denoised - raw| position"}),
    Variable(names.VAR_CELL, (_F, _C, _S), "float64", np.nan, {**_ANG, names.CF_LONG_NAME: "cell vectors (rows)"}),
    Variable(names.VAR_ORIGIN, (_F, _S), "float64", np.nan,
             {**_ANG, names.CF_LONG_NAME: "cell origin (corner; LAMMPS xlo ylo zlo)"}, legacy=names.VAR_ORIGIN),
    Variable(names.VAR_PBC, (_F, _C), "int8", INT_FILL,
             {names.CF_LONG_NAME: "periodic along each cell vector",
              names.CF_COMMENT: f"1 periodic (LAMMPS pp), 0 not (f, s, m: a free surface); {INT_FILL} = not written"},
             legacy=names.VAR_PBC),
    Variable(names.VAR_ITERATIONS, (_F,), "int16", INT_FILL,
             {names.CF_LONG_NAME: "denoising iterations", names.CF_COMMENT: f"{INT_FILL} = not written"}),
    Variable(names.VAR_RESIDUAL, (_F,), "float32", np.nan,
             {**_ANG, names.CF_LONG_NAME: "RMS position update of the last iteration"}),
    Variable(names.VAR_SCALE, (_F,), "float32", np.nan,
             {names.CF_UNITS: "1", names.CF_LONG_NAME: "input / model nearest-neighbour distance"}),
    Variable(names.VAR_RMS_HISTORY, (_F, names.DIM_ITERATION), "float32", np.nan,
             {**_ANG, names.CF_LONG_NAME: "RMS position update per iteration"}, when=_history),
    Variable(names.VAR_STATUS, (_F,), "int8", INT_FILL,
             flag_attrs(names.FRAME_STATUS_NAMES, sorted(names.FRAME_STATUS_NAMES), "frame status",
                        f"{INT_FILL} = not written")),
    Variable(names.VAR_MOBILE_FRACTION, (_F,), "float32", np.nan,
             {names.CF_UNITS: "1", names.CF_LONG_NAME: "fraction of atoms still moving when denoising stopped",
              names.CF_COMMENT: "last update above the tolerance; NaN: tol 0 or not written"},
             when=_history, legacy=names.VAR_MOBILE_FRACTION),
    Variable(names.VAR_EVALUATOR, (_F,), "int8", INT_FILL,
             flag_attrs(names.EVALUATOR_NAMES, sorted(names.EVALUATOR_NAMES), "how the model was evaluated",
                        f"{INT_FILL} = not written or no model (averaging); compiled: equal to eager to "
                        "float32 rounding, not bit for bit"),
             legacy=names.VAR_EVALUATOR),
    Variable(names.VAR_SCOPE, (_F, _A), "int8", INT_FILL,
             flag_attrs(names.SCOPE_NAMES, sorted(names.SCOPE_NAMES), "why the atom was left at its raw position",
                        f"0 = denoised; else left raw because the model cannot apply there (trajden.scope); "
                        f"{INT_FILL} = not written"),
             legacy=names.VAR_SCOPE),
    Variable(names.VAR_N_KEPT_RAW, (_F,), "int32", INT_FILL,
             {names.CF_LONG_NAME: "atoms left at their raw positions (scope != 0)",
              names.CF_COMMENT: f"{INT_FILL} = not written"},
             legacy=names.VAR_SCOPE),
    Variable(names.VAR_COMPLETE, (_F,), "bool", False, {names.CF_LONG_NAME: "frame fully written"}, block=False),
)

#: the variables by name
BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}


def variables(layout: Layout, present: Collection[str] | None = None) -> tuple[Variable, ...]:
    """The variables of a store created with ``layout``, in table order.

    Parameters
    ----------
    layout
        The store's creation choices.
    present
        For an existing store, the names of the arrays it holds: variables with a ``legacy`` marker are then
        listed only if the store holds that array.  None: a store being created (it gets them all).

    Returns
    -------
    tuple of Variable
    """
    return tuple(v for v in VARIABLES
                 if v.when(layout) and (present is None or v.legacy is None or v.legacy in present))
