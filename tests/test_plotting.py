"""Tests of trajden.plotting: figures are written and are not empty."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import xarray as xr

from trajden import names, plotting

N_FRAMES, N_ATOMS, N_ITER = 40, 400, 8


def make_store(seed: int = 0, rms_history: bool = True) -> xr.Dataset:
    """A synthetic fcc -> bcc transition: denoised labels clean, raw labels with 25 % 'other'/'hcp' noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_FRAMES)
    p_bcc = 1 / (1 + np.exp(-(t - 20) / 3.0))
    den = np.where(rng.random((N_FRAMES, N_ATOMS)) < p_bcc[:, None], names.BCC, names.FCC).astype(np.int8)
    den[:, :6] = names.HCP  # a small hcp fraction (1.5 %)
    den[:, 6] = names.ICO  # 0.25 %: below the default threshold, not drawn
    raw = den.copy()
    noise = rng.random(raw.shape)
    raw[noise < 0.2] = names.OTHER
    raw[(noise >= 0.2) & (noise < 0.25)] = names.HCP
    den[30], raw[30] = -1, -1  # a frame not written yet
    dims2 = (names.DIM_FRAME, names.DIM_ATOM)
    residual = 10 ** rng.uniform(-4, -2.5, N_FRAMES)
    iterations = rng.integers(3, N_ITER + 1, N_FRAMES)
    status = np.zeros(N_FRAMES, np.int8)
    status[iterations == N_ITER] = names.FRAME_STATUS_NOT_CONVERGED
    complete = np.ones(N_FRAMES, bool)
    complete[30] = False
    ds = xr.Dataset(
        {
            names.structure_var("ptm"): (dims2, den),
            names.structure_var("ptm", raw=True): (dims2, raw),
            names.structure_var("acna"): (dims2, np.where(den == names.SC, names.OTHER, den).astype(np.int8)),
            names.VAR_RESIDUAL: ((names.DIM_FRAME,), residual.astype(np.float32)),
            names.VAR_ITERATIONS: ((names.DIM_FRAME,), iterations.astype(np.int16)),
            names.VAR_STATUS: ((names.DIM_FRAME,), status),
            names.VAR_COMPLETE: ((names.DIM_FRAME,), complete),
        },
        coords={names.COORD_TIME: ((names.DIM_FRAME,), 0.5 * t), names.COORD_STEP: ((names.DIM_FRAME,), 250 * t)},
        attrs={names.ATTR_TOL: 1e-3, names.ATTR_ITERATIONS: N_ITER, names.ATTR_MODEL: "test-model"},
    )
    if rms_history:
        hist = np.full((N_FRAMES, N_ITER), np.nan, np.float32)
        for f in range(N_FRAMES):
            k = iterations[f]
            hist[f, :k] = 0.3 * np.exp(-1.1 * np.arange(k)) * rng.uniform(0.7, 1.3)
        hist[30] = np.nan
        ds[names.VAR_RMS_HISTORY] = ((names.DIM_FRAME, names.DIM_ITERATION), hist)
    return ds


def _check_png(path, min_bytes=15_000):
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert path.stat().st_size > min_bytes
    rgb = img[..., :3]
    assert (rgb.std(axis=(0, 1)) > 0.05).any()  # not blank
    return rgb


def _has_color(rgb, hex_color, tol=0.06, min_pixels=200):
    target = np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return (np.abs(rgb - target).max(axis=-1) < tol).sum() >= min_pixels


def test_plot_fractions_store_path(tmp_path):
    ds = make_store()
    path = tmp_path / "s.zarr"
    ds.to_zarr(path, consolidated=False, zarr_format=3)
    out = tmp_path / "figs" / "fractions.png"
    assert plotting.plot_fractions(path, out, method="ptm") == str(out)
    rgb = _check_png(out)
    for s in ("fcc", "bcc", "hcp", "other"):
        assert _has_color(rgb, plotting.STRUCTURE_COLORS[s]), s
    assert not _has_color(rgb, plotting.STRUCTURE_COLORS["ico"], min_pixels=20)  # below threshold


def test_plot_fractions_denoised_only(tmp_path):
    ds = make_store()
    out = plotting.plot_fractions(ds, tmp_path / "acna.png", method="acna")
    rgb = _check_png(tmp_path / "acna.png")
    assert out.endswith("acna.png")
    assert _has_color(rgb, plotting.STRUCTURE_COLORS["bcc"])
    assert not _has_color(rgb, plotting.STRUCTURE_COLORS["ico"], min_pixels=20)  # 0.25 % < threshold
    plotting.plot_fractions(ds, tmp_path / "acna_low.png", method="acna", threshold=0.001)
    assert _has_color(_check_png(tmp_path / "acna_low.png"), plotting.STRUCTURE_COLORS["ico"])
    with pytest.raises(KeyError):
        plotting.plot_fractions(ds.drop_vars(["structure_acna"]), tmp_path / "x.png", method="acna")


def test_plot_convergence_history_and_fallback(tmp_path):
    ds = make_store()
    plotting.plot_convergence(ds, tmp_path / "conv.png")
    rgb = _check_png(tmp_path / "conv.png")
    assert _has_color(rgb, "#d62728", min_pixels=100)  # the tolerance line
    ds2 = make_store(rms_history=False)
    plotting.plot_convergence(ds2, tmp_path / "conv_frames.png")
    rgb = _check_png(tmp_path / "conv_frames.png")
    assert _has_color(rgb, "#1f77b4", min_pixels=100)
    with pytest.raises(KeyError):
        plotting.plot_convergence(ds2.drop_vars([names.VAR_RESIDUAL, names.VAR_ITERATIONS]), tmp_path / "x.png")


def test_raw_curve_visible_where_it_equals_the_denoised_one(tmp_path, monkeypatch):
    """The default plot is the README's (a-CNA); where raw == denoised the dashed raw line lies on top, outlined."""
    import inspect

    ds = make_store()
    ds[names.structure_var("acna", raw=True)] = ds[names.structure_var("acna")]  # raw identical to denoised
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, out: figs.append(fig) or str(out))
    plotting.plot_fractions(ds, tmp_path / "x.png")
    assert inspect.signature(plotting.plot_fractions).parameters["method"].default == "acna"
    lines = [ln for ln in figs[0].axes[0].get_lines() if ln.get_linestyle() in ("-", "--")]  # not the x markers
    for color in {ln.get_color() for ln in lines}:
        solid = [ln for ln in lines if ln.get_color() == color and ln.get_linestyle() == "-"]
        dashed = [ln for ln in lines if ln.get_color() == color and ln.get_linestyle() == "--"]
        assert len(solid) == len(dashed) == 1
        np.testing.assert_array_equal(solid[0].get_ydata(), dashed[0].get_ydata())
        assert dashed[0].get_zorder() > solid[0].get_zorder() and dashed[0].get_path_effects()
