"""trajden as an OVITO Python modifier: denoise the current frame inside an ``ovito`` pipeline or OVITO Pro.

::

    from ovito.io import import_file
    from ovito.modifiers import PolyhedralTemplateMatchingModifier
    from trajden.ovito import DenoiseModifier

    pipeline = import_file("trajden/data/cu_solidification.dump")
    pipeline.modifiers.append(DenoiseModifier(model="fcc-bcc-hcp-lite", iterations=4))
    pipeline.modifiers.append(PolyhedralTemplateMatchingModifier())  # sees the denoised positions
    data = pipeline.compute(3)

The modifier runs the same per-frame function as ``trajden process`` (:func:`trajden.denoise.denoise`, the
scale estimate of :mod:`trajden.scale`, models from :mod:`trajden.model.package`), so its positions equal
the store's. It replaces ``Position`` with the denoised positions, keeps the input as ``Raw Position``, adds
the per-atom ``Denoising Displacement`` (|denoised - raw|), the frame's flags as global attributes
(``Denoising.iterations``, ``Denoising.residual``, ``Denoising.scale``, ``Denoising.status``,
``Denoising.status_name``) and the RMS update per iteration as two data tables (linear and log10). The model
is loaded once per process (:func:`trajden.cluster.get_model`), not once per frame.
"""

from __future__ import annotations

import numpy as np
from ovito.data import DataCollection, DataTable
from ovito.modifiers import ExpandSelectionModifier
from ovito.pipeline import ModifierInterface
from traits.api import Bool, Float, Int, Str, Union

from trajden import names
from trajden.denoise import DEFAULT_ITERATIONS
from trajden.scale import estimate_nn_distance

__all__ = ["DenoiseModifier"]


def _cell(data: DataCollection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(3, 3) lattice vectors as rows, the (3,) origin and the (3,) periodic flags of ``data``'s cell.

    Directions that are not periodic (a slab, a particle) get no images; atoms at their free surfaces are held
    where they are (:class:`trajden.scope.SurfaceFinder`).
    """
    cell = data.cell
    if cell is None:
        raise ValueError("DenoiseModifier: the input has no simulation cell; trajden needs a 3-D cell")
    m = np.asarray(cell[...], dtype=np.float64)
    return np.ascontiguousarray(m[:, :3].T), m[:, 3].copy(), np.asarray(cell.pbc, dtype=bool)


class DenoiseModifier(ModifierInterface):
    """Score-based denoising of the current frame (Hsu et al. 2024) with a trajden model.

    Parameters (traits, settable in the constructor or in OVITO Pro's panel)
    ----------
    model : ``auto`` (default: chosen by the particles' elements, :func:`trajden.model.coverage.choose_model`),
        a shipped model's name (``trajden models``) or a trajden model file
    species : element symbols of numbered particle types 1, 2, ... (``--species``), e.g. ``"Ni,Al"``, for
        inputs whose types have no element names
    iterations : maximum number of denoising iterations (``trajden process --iterations``)
    tolerance : stop when the RMS update of an iteration falls below this (angstrom); ``None``: 0.005
        nearest-neighbour distances (``--tol``); ``0``: always run ``iterations``
    scale : the input's nearest-neighbour distance in angstrom; ``None``: estimated from g(r) (``--scale auto``)
    device : ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``--device``)
    only_selected : denoise only the selected particles (``Selection`` property); the particles within
        ``iterations`` receptive fields of them are denoised with them as context and then left where they
        were (with ``tolerance=0`` the selected particles move exactly as in a whole-frame run, to float32
        rounding; with a tolerance the stop test sees only this subset's RMS update)
    """

    model = Str("auto", label="Model (auto, shipped name or file)")
    species = Union(None, Str, label="Elements of types 1, 2, ... (e.g. Ni,Al; None: the type names)")
    iterations = Int(DEFAULT_ITERATIONS, label="Maximum iterations")
    tolerance = Union(None, Float, label="Tolerance (angstrom; None: 0.005 nn distances)")
    scale = Union(None, Float, label="Nearest-neighbour distance (angstrom; None: auto)")
    device = Str("auto", label="Device (auto, cpu, cuda)")
    only_selected = Bool(False, label="Only selected particles")

    def _loaded(self, elements):
        # one load per process and (model, device): every frame and every pipeline reuse it
        from trajden.cluster import get_model
        from trajden.model.coverage import AUTO, choose_model

        name = choose_model(elements) if self.model == AUTO else self.model
        return (AUTO, None) if name is None else (name, get_model(name, self.device))

    def _elements(self, data: DataCollection):
        from trajden.model.coverage import elements_from_labels

        if "Particle Type" not in data.particles:
            return None
        ptypes = data.particles.particle_types
        names_of = {t.id: (t.name or str(t.id)) for t in ptypes.types}
        return elements_from_labels([names_of[int(i)] for i in np.asarray(ptypes[...])], self.species)

    def modify(self, data: DataCollection, *, frame: int, **kwargs):
        if self.iterations < 0:
            raise ValueError(f"DenoiseModifier: iterations must be >= 0, not {self.iterations}")
        from trajden.model.coverage import denoise_elements

        cell, _origin, pbc = _cell(data)
        raw = np.array(data.particles.positions[...], dtype=np.float64)
        elements = self._elements(data)
        name, model = self._loaded(elements)  # (AUTO, None): no shipped model covers the elements
        scale = "auto" if self.scale is None else float(self.scale)
        kw = dict(k=int(self.iterations), tol=self.tolerance, pbc=None if pbc.all() else pbc)
        if self.only_selected:
            if "Selection" not in data.particles:
                raise ValueError("DenoiseModifier: only_selected is set but the particles have no Selection")
            selected = np.asarray(data.particles["Selection"][...]) != 0
            out = raw.copy()
            result = None
            if selected.any() and model is None:
                result, _, _ = denoise_elements(raw, cell, elements, name, pbc=kw["pbc"])  # left raw, flagged
            elif selected.any():
                nn = estimate_nn_distance(raw, cell, pbc=kw["pbc"]) if scale == "auto" else scale
                # each iteration reaches one receptive field further: k of them (plus a nearest-neighbour
                # distance for the atoms' motion) make the selected atoms' result that of the whole frame
                halo = (max(int(self.iterations), 1) * model.receptive_field + model.nn_distance) / model.nn_distance
                context = self._context(data, selected, halo * nn)
                sub = np.flatnonzero(context)
                result, _, _ = denoise_elements(raw[sub], cell, None if elements is None else elements[sub], name,
                                                self.device, scale=nn, **kw)
                keep = selected[sub]
                out[sub[keep]] = result.positions[keep]
        else:
            result, _, _ = denoise_elements(raw, cell, elements, name, self.device, scale=scale, **kw)
            out = result.positions
        self._write(data, raw, out, result)

    @staticmethod
    def _context(data: DataCollection, selected: np.ndarray, halo: float) -> np.ndarray:
        """Selected particles plus every particle within ``halo`` of one (the model's receptive field)."""
        probe = data.clone()
        probe.particles_.create_property("Selection", data=selected.astype(np.int32))
        probe.apply(ExpandSelectionModifier(mode=ExpandSelectionModifier.ExpansionMode.Cutoff, cutoff=float(halo)))
        return np.asarray(probe.particles["Selection"][...]) != 0

    @staticmethod
    def _write(data: DataCollection, raw: np.ndarray, positions: np.ndarray, result) -> None:
        particles = data.particles_
        particles.create_property(names.OVITO_RAW_POSITION, data=raw)
        particles.positions_[...] = positions
        particles.create_property(names.OVITO_DISPLACEMENT, data=np.sqrt(((positions - raw) ** 2).sum(-1)))
        if result is not None and result.scope is not None and len(result.scope) == len(raw):
            particles.create_property(names.OVITO_SCOPE, data=np.asarray(result.scope, dtype=np.int32))
        if result is None:  # only_selected with nothing selected
            history, iterations, residual, nn, status = [], 0, 0.0, float("nan"), names.FRAME_STATUS_OK
        else:
            history, iterations, residual = result.rms_history, result.iterations, result.residual
            nn, status = result.scale, result.status
        attrs = data.attributes
        attrs[names.OVITO_ATTR_PREFIX + "iterations"] = int(iterations)
        attrs[names.OVITO_ATTR_PREFIX + "residual"] = float(residual)
        attrs[names.OVITO_ATTR_PREFIX + "scale"] = float(nn)
        attrs[names.OVITO_ATTR_PREFIX + "status"] = int(status)
        attrs[names.OVITO_ATTR_PREFIX + "status_name"] = names.FRAME_STATUS_NAMES[int(status)]
        rms = np.asarray(history, dtype=np.float64)
        for ident, title, y in (
            ("denoising-convergence", "Denoising: RMS update per iteration (angstrom)", rms),
            ("denoising-convergence-log", "Denoising: log10 RMS update per iteration",
             np.log10(np.maximum(rms, 1e-30))),
        ):
            table = data.tables.create(identifier=ident, title=title, plot_mode=DataTable.PlotMode.Line)
            table.x = table.create_property("Iteration", data=np.arange(1, len(rms) + 1))
            table.y = table.create_property("RMS update" if "log" not in ident else "log10 RMS update", data=y)
