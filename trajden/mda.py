"""trajden as an MDAnalysis analysis class: denoise and label the frames of an AtomGroup.

::

    import MDAnalysis as mda
    from trajden.mda import Denoise

    u = mda.Universe("trajden/data/cu_solidification.dump", format="LAMMPSDUMP")
    d = Denoise(u.atoms, model="fcc-bcc-hcp-lite", iterations=4).run(step=8, backend="multiprocessing", n_workers=2)
    d.results.positions        # (frames, atoms, 3) denoised, in the AtomGroup's order
    d.results.labels["ptm"]    # (frames, atoms) int8, OVITO's codes (trajden.names)
    d.results.fractions["ptm"] # (frames, structures) in d.results.structures order

Each frame goes through the same functions as ``trajden process`` (:func:`trajden.denoise.denoise`,
:func:`trajden.classify.classify`), so a frame gives the same numbers here as in a store. The model is
loaded once per process (:func:`trajden.cluster.get_model`); the analysis object itself holds only its
settings, so MDAnalysis' ``multiprocessing`` and ``dask`` backends can ship it to workers, and they give the
same results as ``serial``: each frame is computed independently, with the same code and the same inputs.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.backends import BackendMultiprocessing
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.analysis.results import ResultsGroup

from trajden import names
from trajden.classify import DEFAULT_PTM_RMSD_CUTOFF, classify
from trajden.denoise import DEFAULT_ITERATIONS

__all__ = ["Denoise"]

#: per-frame results and how MDAnalysis merges the workers' parts (frames are split into contiguous parts)
_PER_FRAME = ("positions", "displacement", "iterations", "residual", "scale", "status")


class Denoise(AnalysisBase):
    """Denoise (and label) every analysed frame of ``atomgroup``.

    Parameters
    ----------
    atomgroup : the atoms to denoise (usually ``u.atoms``: a subset loses its neighbours' context)
    model : a shipped model's name or a trajden model file (``trajden process --model``)
    iterations : maximum iterations (``--iterations``)
    tol : RMS-update tolerance in angstrom (``--tol``; ``None``: 0.005 nearest-neighbour distances)
    scale : ``"auto"`` or the input's nearest-neighbour distance in angstrom (``--scale``)
    classifiers : labels to compute on the denoised positions, ``("acna", "ptm")``, a subset, or ``()``
    raw_labels : also label the raw positions (``results.labels_raw``)
    ptm_rmsd_cutoff : PTM's RMSD cutoff (``--ptm-rmsd-cutoff``)
    device : ``auto``, ``cpu`` or ``cuda`` (``--device``)

    Attributes
    ----------
    results.positions : (n_frames, n_atoms, 3) float64 denoised positions, in the AtomGroup's order
    results.displacement : (n_frames, n_atoms) |denoised - raw|
    results.labels, results.labels_raw : classifier -> (n_frames, n_atoms) int8
    results.fractions, results.fractions_raw : classifier -> (n_frames, len(results.structures)) float64
    results.structures : names of the fraction columns (every OVITO code, :data:`trajden.names.STRUCTURE_NAMES`)
    results.iterations, results.residual, results.scale, results.status : (n_frames,) per-frame flags
        (status codes: :data:`trajden.names.FRAME_STATUS_NAMES`)
    """

    _analysis_algorithm_is_parallelizable = True

    @classmethod
    def get_supported_backends(cls):
        return ("serial", "multiprocessing", "dask")

    def __init__(self, atomgroup, model: str = "auto", iterations: int = DEFAULT_ITERATIONS,
                 tol: float | None = None, scale: float | str = "auto", classifiers=(names.ACNA, names.PTM),
                 raw_labels: bool = False, ptm_rmsd_cutoff: float = DEFAULT_PTM_RMSD_CUTOFF, device: str = "auto",
                 species=None, **kwargs):
        super().__init__(atomgroup.universe.trajectory, **kwargs)
        self._ag = atomgroup
        self.model, self.iterations, self.tol, self.scale = str(model), int(iterations), tol, scale
        self.classifiers = tuple(classifiers)
        for c in self.classifiers:
            names.structure_var(c)  # ValueError for an unknown classifier, before any frame runs
        self.raw_labels, self.ptm_rmsd_cutoff, self.device = bool(raw_labels), float(ptm_rmsd_cutoff), device
        self.species = species

    def _configure_backend(self, backend, n_workers, unsupported_backend=False):
        executor = super()._configure_backend(backend, n_workers, unsupported_backend=unsupported_backend)
        if type(executor) is BackendMultiprocessing:
            # MDAnalysis' pool forks; a child forked from a process whose torch/OVITO thread pools already ran
            # can hang for ever (seen here: after a serial run in the same process). Spawned workers start clean.
            executor = _SpawnPool(n_workers=executor.n_workers)
        return executor

    def _get_aggregator(self):
        stack = {k: ResultsGroup.ndarray_vstack if k in ("positions", "displacement") else ResultsGroup.ndarray_hstack
                 for k in _PER_FRAME}
        for k in ("labels", "labels_raw", "fractions", "fractions_raw"):
            stack[k] = _merge_dicts
        stack["structures"] = _first
        return ResultsGroup(lookup=stack)

    def _elements(self) -> np.ndarray | None:
        """The atoms' elements: the topology's, else named by their types (``species`` for numbered types)."""
        from trajden.model.coverage import elements_from_labels

        if self.species is None and hasattr(self._ag, "elements"):
            el = np.asarray(self._ag.elements).astype(str)
            if np.all(el != ""):
                return elements_from_labels(el)
        try:
            types = np.asarray(self._ag.types)
        except Exception:  # noqa: BLE001 - a topology without types: all atoms alike
            return None
        return elements_from_labels(types, self.species)

    def _prepare(self):
        n, m = self.n_frames, len(self._ag)
        self.results.positions = np.zeros((n, m, 3))
        self.results.displacement = np.zeros((n, m))
        self.results.iterations = np.zeros(n, dtype=np.int16)
        self.results.residual = np.zeros(n)
        self.results.scale = np.zeros(n)
        self.results.status = np.zeros(n, dtype=np.int8)
        self.results.structures = list(names.STRUCTURE_NAMES.values())
        for key in ("labels", "fractions") + (("labels_raw", "fractions_raw") if self.raw_labels else ()):
            shape = (n, m) if key.startswith("labels") else (n, len(names.STRUCTURE_NAMES))
            self.results[key] = {c: np.zeros(shape, dtype=np.int8 if key.startswith("labels") else np.float64)
                                 for c in self.classifiers}
        self._atom_elements = self._elements()

    def _single_frame(self):
        from trajden.model.coverage import denoise_elements
        from trajden.pipeline import check_frame

        i = self._frame_index
        ts = self._ts
        raw = np.asarray(self._ag.positions, dtype=np.float64)
        cell = np.asarray(ts.triclinic_dimensions, dtype=np.float64) if ts.dimensions is not None else np.zeros((3, 3))
        check_frame(_FrameView(ts.frame, cell, self._ag.universe.filename))
        result, _, _ = denoise_elements(raw, cell, self._atom_elements, self.model, self.device, k=self.iterations,
                                        tol=self.tol, scale=self.scale)
        r = self.results
        r.positions[i] = result.positions
        r.displacement[i] = np.sqrt(((result.positions - raw) ** 2).sum(-1))
        r.iterations[i], r.residual[i], r.scale[i], r.status[i] = (result.iterations, result.residual, result.scale,
                                                                   result.status)
        variants = [("labels", "fractions", result.positions)]
        if self.raw_labels:
            variants.append(("labels_raw", "fractions_raw", raw))
        for lab_key, frac_key, pos in variants:
            labels = classify(pos, cell, self.classifiers, ptm_rmsd_cutoff=self.ptm_rmsd_cutoff)
            for c, lab in labels.items():
                r[lab_key][c][i] = lab
                counts = np.bincount(lab.astype(np.int64), minlength=len(names.STRUCTURE_NAMES))
                r[frac_key][c][i] = counts[: len(names.STRUCTURE_NAMES)] / max(len(lab), 1)

    def _conclude(self):
        pass


class _SpawnPool(BackendMultiprocessing):
    """MDAnalysis' multiprocessing backend with spawned (not forked) worker processes."""

    def apply(self, func, computations: list) -> list:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes=self.n_workers) as pool:
            return pool.map(func, computations)


class _FrameView:
    """What :func:`trajden.pipeline.check_frame` reads (cell, and file and frame for its message)."""

    def __init__(self, index: int, cell: np.ndarray, source):
        self.index, self.cell, self.source = index, cell, source


def _merge_dicts(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def _first(parts: list):
    return parts[0]
