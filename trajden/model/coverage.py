"""Which model covers an input's elements, and how the input's elements map onto a model's species.

A model knows ``len(metadata["species"])`` species. One-element models treat every atom alike and apply to
inputs of one element (or of unnamed atoms of one type). The two-element model ``binary`` was trained with
the roles of its two species swapped half of the time (:func:`trajden.train._species`), so any one-to-one
map of an input's two elements onto its species 0 and 1 is equally valid; the map used is still fixed
(elements by decreasing count, then by symbol) and recorded in the store, so a run can be reproduced.
A model for named elements (``silica``, ``silica-networks``: species Si and O, each in its own role, never
swapped in training; :attr:`trajden.model.package.LoadedModel.named_species`) maps an input's elements by
symbol, and an element it does not name is an error. Inputs whose elements are exactly those of a model listed
in :data:`ELEMENT_MODELS` get that model; other two-element inputs get ``binary``.

Inputs with more elements than any shipped model covers are not rewritten: :func:`choose_model` returns
``None`` and the pipeline leaves such frames at their raw positions, flagged
(:data:`trajden.names.SCOPE_SPECIES`). A model the user chose that cannot take the input's elements is an
error (:class:`ModelScopeError`), never a silent merge of elements.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from trajden.errors import ModelError

#: the model chosen for inputs of one element (or unnamed atoms of one type)
ONE_ELEMENT_MODEL = "fcc-bcc-hcp"
#: the model chosen for inputs of two elements
TWO_ELEMENT_MODEL = "binary"
#: shipped models for named elements chosen automatically for inputs of exactly these elements (before
#: ``binary``). Si and O get ``silica-networks``, trained on tilted frameworks of regular SiO4 tetrahedra as well
#: as the ideal polymorphs: on real Munetoh-Tersoff MD of cristobalites and quartzes it keeps every Si's four O
#: and narrows the O-Si-O and Si-O spreads further than ``binary`` or ``silica`` (docs/compounds_md.md). The
#: opt-in ``silica`` (the ideal polymorphs only) removes more of synthetic Gaussian noise from the ideal
#: structures but straightens the bent Si-O-Si bonds of hot cristobalite.
ELEMENT_MODELS: dict[frozenset, str] = {frozenset({"Si", "O"}): "silica-networks"}
#: ``--model`` value that lets trajden choose by the input's number of elements
AUTO = "auto"
#: the element name of atoms whose element is unknown (a single-type input without element information)
UNKNOWN = ""


class ModelScopeError(ModelError):
    """The model the user chose cannot take the input's elements."""


def distinct_elements(elements) -> list[str]:
    """The input's distinct elements, by decreasing count then symbol (``[]`` for ``None``)."""
    if elements is None:
        return []
    counts = Counter(str(e) for e in np.asarray(elements).ravel())
    return sorted(counts, key=lambda e: (-counts[e], e))


def choose_model(elements) -> str | None:
    """The shipped model for an input with these per-atom ``elements`` (``None``: no shipped model covers it).

    ``elements`` may be ``None`` (atoms of one unnamed type).
    """
    distinct = distinct_elements(elements)
    n = len(distinct)
    if n <= 1:
        return ONE_ELEMENT_MODEL
    if frozenset(distinct) in ELEMENT_MODELS:
        return ELEMENT_MODELS[frozenset(distinct)]
    if n == 2:
        return TWO_ELEMENT_MODEL
    return None


def species_map(elements, num_types: int, model_name: str = "the model",
                named: list[str] | None = None) -> dict[str, int]:
    """Element -> model species index for an input with these per-atom ``elements``.

    Parameters
    ----------
    elements : (N,) element symbols, or ``None`` (atoms of one unnamed type)
    num_types : the model's number of species
    model_name : named in the error
    named : the model's species as element symbols (:attr:`~trajden.model.package.LoadedModel.named_species`):
        elements are then mapped by symbol

    Raises
    ------
    ModelScopeError
        The input has more distinct elements than the model has species, or an element a model of named
        species does not name.
    """
    distinct = distinct_elements(elements)
    if named:
        if elements is None:
            raise ModelScopeError(f"{model_name} knows the elements {', '.join(named)}, not (unnamed) atoms",
                                  hint="name the atoms' elements (--species)")
        missing = [e or "(unnamed)" for e in distinct if e not in named]
        if missing:
            raise ModelScopeError(f"{model_name} knows the elements {', '.join(named)}, not "
                                  f"{', '.join(missing[:6])}", hint="leave out --model to let trajden choose")
        return {e: named.index(e) for e in distinct}
    if len(distinct) > num_types:
        shown = ", ".join(e or "(unnamed)" for e in distinct[:6]) + (", ..." if len(distinct) > 6 else "")
        raise ModelScopeError(
            f"{len(distinct)} elements in the input ({shown}) but {model_name} knows {num_types} "
            f"species{'' if num_types > 1 else ' (one element)'}", hint="leave out --model to let trajden choose")
    if num_types == 1:
        return {e: 0 for e in distinct}
    return {e: i for i, e in enumerate(distinct)}


def model_types(elements, mapping: dict[str, int], n_atoms: int) -> np.ndarray:
    """(N,) int64 model species of each atom under ``mapping`` (all 0 where ``elements`` is ``None``)."""
    if elements is None or not mapping:
        return np.zeros(n_atoms, dtype=np.int64)
    elements = np.asarray(elements).astype(str)
    out = np.zeros(len(elements), dtype=np.int64)
    for e, k in mapping.items():
        out[elements == e] = k
    return out


def elements_from_labels(labels, species=None) -> np.ndarray | None:
    """Per-atom element symbols from per-atom type ``labels`` (names or numbers) as entry points get them.

    Parameters
    ----------
    labels : (N,) type names (element symbols such as "Cu", or numbers such as 1, "2") or ``None``
    species : element symbols of types 1, 2, ... (like ``--species``), for labels that are numbers

    Returns
    -------
    (N,) element symbols, or ``None`` for atoms of one unnamed type.

    Raises
    ------
    ModelScopeError
        several types, no element names, and no ``species``: never a silent guess.
    """
    from trajden.io.species import normalise_symbol, parse_species

    if labels is None:
        return None
    labels = np.asarray(labels).astype(str)
    uniq = np.unique(labels)
    if species is not None:
        symbols = parse_species(species)
        try:
            index = np.array([int(u) for u in uniq])
        except ValueError:
            raise ModelScopeError(f"species {','.join(symbols)}: the atom types are named "
                                  f"({', '.join(uniq[:6])}), not numbered 1, 2, ...") from None
        if index.min() < 1 or index.max() > len(symbols):
            raise ModelScopeError(f"species {','.join(symbols)} names types 1..{len(symbols)}, the input has types "
                                  f"{', '.join(uniq[:6])}")
        lookup = {u: symbols[i - 1] for u, i in zip(uniq, index)}
        return np.array([lookup[t] for t in labels])
    named = {u: normalise_symbol(u) for u in uniq}
    if all(named.values()):
        return np.array([named[t] for t in labels])
    if len(uniq) == 1:
        return None
    raise ModelScopeError(f"{len(uniq)} atom types ({', '.join(uniq[:6])}) and no element names: pass "
                          "species (element symbols of types 1, 2, ...)")


def denoise_elements(positions, cell, elements, model: str = AUTO, device: str = "cpu", **kwargs):
    """Denoise one frame whose atoms are ``elements``, with ``model`` or the shipped model that covers them.

    The one per-frame call of trajden's entry points (OVITO modifier, MDAnalysis analysis, ASE): ``auto``
    chooses by the number of elements (:func:`choose_model`); where no shipped model covers them the frame is
    returned raw, every atom flagged :data:`trajden.names.SCOPE_SPECIES`. ``kwargs`` go to
    :func:`trajden.denoise.denoise`.

    Returns
    -------
    (DenoiseResult, model name or "none", {element: model species})
    """
    from trajden import names
    from trajden.cluster import get_model
    from trajden.denoise import DenoiseResult, denoise

    positions = np.asarray(positions, dtype=np.float64)
    name = choose_model(elements) if model == AUTO else model
    if name is None:
        return DenoiseResult.left_raw(positions, names.SCOPE_SPECIES), "none", {}
    loaded = get_model(name, device)
    mapping = species_map(elements, loaded.num_types, f"model {loaded.name}", loaded.named_species)
    types = model_types(elements, mapping, len(positions))
    return denoise(positions, cell, types, loaded, **kwargs), loaded.name, mapping
