"""Self-describing TorchScript model files: export with metadata inside, safe loading, shipped registry.

A trajden model file is a TorchScript archive (``torch.jit.save``) whose ``_extra_files`` hold
``trajden_metadata.json`` (see :data:`trajden.names.META_FILE`): cutoff and nearest-neighbour distance
of training, species, reference structures, sigma_max, the training configuration and trajden's version.
Loading goes through ``torch.jit.load`` only: it restores scripted code and tensors, never arbitrary
pickled Python objects, and does not depend on trajden's module paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from trajden import __version__, names
from trajden.errors import ModelError

#: keys every metadata block must have
REQUIRED_KEYS = ("name", "cutoff", "nn_distance", "species", "structures", "sigma_max", "trajden_version")


class ModelFileError(ModelError):
    """A file that is not a loadable trajden model (or whose checksum does not match)."""

    def __init__(self, message: str):
        super().__init__(message, hint="pass --model a shipped model name (`trajden models`) or a file written by "
                                       "`trajden train`")


@dataclass
class LoadedModel:
    """A loaded model: the scripted network, its metadata, the file's sha256 and where it came from."""

    module: torch.jit.ScriptModule
    metadata: dict
    sha256: str
    path: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff in the model's length unit (its nearest-neighbour distance is ``nn_distance``)."""
        return float(self.metadata["cutoff"])

    @property
    def nn_distance(self) -> float:
        return float(self.metadata["nn_distance"])

    @property
    def num_types(self) -> int:
        return len(self.metadata["species"])

    @property
    def named_species(self) -> list[str] | None:
        """The model's species as element symbols in species order (``["Si", "O"]``), for a model trained
        with each species in one fixed role (``training_config.swap_roles`` false); ``None`` for a model whose
        species are interchangeable roles (``binary``) or that has one species."""
        from trajden.io.species import normalise_symbol

        species = [str(s) for s in self.metadata.get("species", [])]
        cfg = self.metadata.get("training_config") or {}
        if len(species) < 2 or cfg.get("swap_roles", True):
            return None
        named = [normalise_symbol(s) for s in species]
        return named if all(named) else None

    @property
    def sigma_max(self) -> float:
        """The largest training noise, per coordinate, in nearest-neighbour distances."""
        return float(self.metadata["sigma_max"]) / self.nn_distance

    @property
    def receptive_field(self) -> float:
        return self.cutoff * int(self.metadata.get("n_layers", 3))


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_model(scripted: torch.jit.ScriptModule, metadata: dict, path: str | os.PathLike) -> str:
    """Write ``scripted`` with ``metadata`` inside; return the file's sha256."""
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    meta = dict(metadata)
    meta.setdefault("trajden_version", __version__)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.jit.save(scripted, str(tmp), _extra_files={names.META_FILE: json.dumps(meta, indent=1, sort_keys=True)})
    os.replace(tmp, path)
    return sha256_of(path)


def _registry() -> dict:
    with resources.files("trajden.models").joinpath("registry.json").open() as fh:
        return json.load(fh)


def shipped_models() -> dict[str, dict]:
    """Name -> registry entry (``file``, ``sha256``, ``description``) of the models shipped with trajden."""
    return _registry()


def resolve_model(name_or_path: str | os.PathLike) -> tuple[Path, str | None]:
    """A shipped model's name or a file path -> (path, expected sha256 or None)."""
    reg = _registry()
    key = str(name_or_path)
    if key in reg:
        entry = reg[key]
        return Path(str(resources.files("trajden.models").joinpath(entry["file"]))), entry["sha256"]
    path = Path(key)
    if not path.exists():
        raise ModelFileError(f"{key}: no such model file, and not a shipped model (shipped: {', '.join(reg)})")
    return path, None


def load_model(
    name_or_path: str | os.PathLike, device: str | torch.device = "cpu", expected_sha256: str | None = None
) -> LoadedModel:
    """Load a shipped model by name or a model file; verify it is a trajden TorchScript archive.

    Raises
    ------
    ModelFileError
        If the file is not a TorchScript zip archive, lacks trajden metadata, or its sha256 differs from
        the recorded one.
    """
    path, recorded = resolve_model(name_or_path)
    expected = expected_sha256 or recorded
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        raise ModelFileError(f"{path}: sha256 {digest[:16]}... does not match the recorded {expected[:16]}...")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a trajden model (not a TorchScript archive)")
    with zipfile.ZipFile(path) as zf:
        if not any(n.endswith("extra/" + names.META_FILE) for n in zf.namelist()):
            raise ModelFileError(f"{path}: not a trajden model (no {names.META_FILE} inside)")
    extra = {names.META_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=torch.device(device), _extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        raise ModelFileError(f"{path}: not a loadable TorchScript model ({type(exc).__name__})") from exc
    try:
        metadata = json.loads(extra[names.META_FILE])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: corrupted trajden metadata") from exc
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ModelFileError(f"{path}: trajden metadata lacks {missing}")
    module.eval()
    return LoadedModel(module, metadata, digest, str(path), torch.device(device))
