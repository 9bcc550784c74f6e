"""trajden: score-based denoising of molecular-dynamics trajectories for structure identification."""

__version__ = "0.1.0"
