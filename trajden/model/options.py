"""How the model is evaluated: :class:`EvaluatorOptions`, the ``trajden.evaluator.*`` settings.

They come from trajden's layered configuration (:func:`trajden.cluster.resolve_config`, section
``evaluator``: keyword arguments > command line > ``--cluster-config`` file > Dask's config > packaged
defaults in ``trajden/trajden.yaml``) and are passed explicitly to :func:`trajden.denoise.denoise` and on to
:func:`trajden.decompose.evaluator`; nothing below reads the environment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: ``compile`` values: ``auto`` (compiled where it pays: large CPU frames or long runs, measured faster on this
#: machine; always on CUDA), ``on`` (always), ``off`` (never: the bit-exact eager path)
COMPILE_CHOICES = ("auto", "on", "off")
#: ``aggregate`` values: ``auto`` (a CPU compiles whole layers, a GPU times both compiled sums) or one of them
AGGREGATE_CHOICES = ("auto", "layer", "atomic", "padded")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class EvaluatorOptions:
    """The evaluator's switches (``trajden.evaluator.compile``, ``.fused``, ``.aggregate``).

    Attributes
    ----------
    compile : str
        ``"auto"``, ``"on"`` or ``"off"`` (see :data:`COMPILE_CHOICES`).
    fused : bool
        Fused tensor products with tabulated radial networks (:mod:`trajden.model.fused`); ``False``: e3nn's
        own modules, block by block.
    aggregate : str
        Which compiled function runs (see :data:`AGGREGATE_CHOICES`).
    aot_cache : str
        Where a CPU's ahead-of-time compiled layers are kept (:mod:`trajden.model.aot`): ``"auto"``
        (``$XDG_CACHE_HOME/trajden/aot`` or ``~/.cache/trajden/aot``), a directory, or ``"off"`` (compiled
        code then comes from ``torch.compile`` in each process). The packaged configuration
        (``trajden/trajden.yaml``, what :func:`trajden.cluster.evaluator_options` and the CLI start from) says
        ``"auto"``; options built in code without it touch no cache.
    """

    compile: str = "auto"
    fused: bool = True
    aggregate: str = "auto"
    aot_cache: str = "off"

    def __post_init__(self):
        compile_ = self.compile
        if isinstance(compile_, bool):  # YAML's on/off/true/false parse as booleans
            compile_ = "on" if compile_ else "off"
        compile_ = str(compile_).lower()
        compile_ = {"1": "on", "true": "on", "0": "off", "false": "off"}.get(compile_, compile_)
        if compile_ not in COMPILE_CHOICES:
            raise ValueError(f"trajden.evaluator.compile must be one of {', '.join(COMPILE_CHOICES)}, "
                             f"not {self.compile!r}")
        fused = self.fused
        if isinstance(fused, str):
            if fused.lower() not in _TRUE + _FALSE:
                raise ValueError(f"trajden.evaluator.fused must be true or false, not {fused!r}")
            fused = fused.lower() in _TRUE
        aggregate = str(self.aggregate or "auto").lower()
        if aggregate not in AGGREGATE_CHOICES:
            raise ValueError(f"trajden.evaluator.aggregate must be one of {', '.join(AGGREGATE_CHOICES)}, "
                             f"not {self.aggregate!r}")
        object.__setattr__(self, "compile", compile_)
        object.__setattr__(self, "fused", bool(fused))
        object.__setattr__(self, "aggregate", aggregate)
        aot_cache = self.aot_cache
        if aot_cache is None or aot_cache is False:
            aot_cache = "off"
        object.__setattr__(self, "aot_cache", str(aot_cache))

    @classmethod
    def from_config(cls, section: dict | None) -> EvaluatorOptions:
        """From a resolved ``evaluator`` section (dashed or underscored keys; ``None`` values: defaults)."""
        values = {str(k).replace("-", "_"): v for k, v in (section or {}).items() if v is not None}
        unknown = sorted(set(values) - {"compile", "fused", "aggregate", "aot_cache"})
        if unknown:
            raise ValueError(f"unknown option(s) trajden.evaluator.{', '.join(unknown)}")
        return cls(**values)

    def compile_arg(self, request: bool | str | None) -> bool | str | None:
        """The ``compile`` argument for :class:`~trajden.model.evaluate.BlockedEvaluator`: ``request`` (what
        :func:`trajden.decompose.compile_request` asks for a frame) under ``auto``, else ``True``/``False``."""
        if self.compile == "on":
            return True
        if self.compile == "off":
            return False
        return request

    @property
    def forced_aggregate(self) -> str | None:
        """The compiled function named by ``aggregate``; ``None`` for ``auto``."""
        return None if self.aggregate == "auto" else self.aggregate

    def as_dict(self) -> dict:
        """JSON-able, as recorded in a store's attributes."""
        return asdict(self)
