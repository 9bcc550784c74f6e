"""The one place where trajden's names live: store dimensions and variables, attributes, label codes.

Label codes follow OVITO's ``StructureType`` numbering for PTM (a-CNA uses the first five).
"""

from __future__ import annotations

# --- structure label codes (OVITO numbering) -------------------------------------------------
OTHER = 0
FCC = 1
HCP = 2
BCC = 3
ICO = 4
SC = 5
CUBIC_DIAMOND = 6
HEX_DIAMOND = 7

#: code -> short name, in code order
STRUCTURE_NAMES: dict[int, str] = {
    OTHER: "other",
    FCC: "fcc",
    HCP: "hcp",
    BCC: "bcc",
    ICO: "ico",
    SC: "sc",
    CUBIC_DIAMOND: "cd",
    HEX_DIAMOND: "hd",
}
#: short name -> code
STRUCTURE_CODES: dict[str, int] = {v: k for k, v in STRUCTURE_NAMES.items()}

#: codes a-CNA can produce (OVITO's adaptive CNA without diamond)
ACNA_CODES = (OTHER, FCC, HCP, BCC, ICO)
#: codes PTM can produce with the structures trajden enables (fcc, hcp, bcc, sc, cd, hd; ico off)
PTM_CODES = (OTHER, FCC, HCP, BCC, SC, CUBIC_DIAMOND, HEX_DIAMOND)

# --- classifiers ---------------------------------------------------------------------------------
ACNA = "acna"
PTM = "ptm"
CLASSIFIERS = (ACNA, PTM)

# --- store dimensions ----------------------------------------------------------------------------
DIM_FRAME = "frame"
DIM_ATOM = "atom"
DIM_SPATIAL = "spatial"
DIM_CELL_VECTOR = "cell_vector"
DIM_ITERATION = "iteration"  # per-iteration diagnostics (see VAR_RMS_HISTORY)

# --- store coordinates -----------------------------------------------------------------------
COORD_TIME = "time"  # (frame,) float64, ps
COORD_STEP = "step"  # (frame,) int64, MD timestep
COORD_ATOM_ID = "atom_id"  # (atom,) int64, the input's atom ids (sorted)

# --- store variables -------------------------------------------------------------------------
VAR_POSITIONS = "positions"  # (frame, atom, spatial) float32, denoised, angstrom
VAR_POSITIONS_RAW = "positions_raw"  # (frame, atom, spatial) float32, as read (--keep-raw)
VAR_DISPLACEMENT = "displacement"  # (frame, atom) float32, |denoised - raw|, angstrom
VAR_CELL = "cell"  # (frame, cell_vector, spatial) float64, angstrom
VAR_ORIGIN = "origin"  # (frame, spatial) float64, angstrom: the cell's corner (LAMMPS xlo, ylo, zlo)
VAR_PBC = "pbc"  # (frame, cell_vector) int8: 1 periodic along that cell vector, 0 not (a free surface), -1 unwritten
VAR_TYPE = "type"  # (atom,) int32
VAR_ITERATIONS = "iterations"  # (frame,) int16
VAR_RESIDUAL = "residual"  # (frame,) float32, RMS update of the last iteration, angstrom
VAR_SCALE = "scale"  # (frame,) float32, input nn distance / model nn distance
VAR_STATUS = "status"  # (frame,) int8, see FRAME_STATUS_*
VAR_COMPLETE = "complete"  # (frame,) bool, frame fully written
VAR_EVALUATOR = "evaluator"  # (frame,) int8, how the model ran, see EVALUATOR_*
VAR_RMS_HISTORY = "rms_history"  # (frame, iteration) float32, RMS update per iteration, NaN after the last
VAR_SCOPE = "scope"  # (frame, atom) int8, SCOPE_* codes: 0 denoised, else why the atom was left raw
VAR_N_KEPT_RAW = "n_kept_raw"  # (frame,) int32, atoms left raw because the model cannot apply to them
VAR_ELEMENT = "element"  # (atom,) int16, atomic number (0 = unknown), CF flag_values/flag_meanings = symbols
VAR_MOBILE_FRACTION = "mobile_fraction"  # (frame,) float32, atoms whose last update exceeded tol (NaN: tol 0)


# --- PTM chemical ordering codes (OVITO's PolyhedralTemplateMatchingModifier.OrderingType) ----------------
ORDERING_NAMES = {0: "none", 1: "pure", 2: "L10", 3: "L12_A", 4: "L12_B", 5: "B2", 6: "zincblende_wurtzite",
                  7: "boron_nitride"}
#: PTM's chemical ordering per atom (inputs of two or more elements), after / before denoising
VAR_ORDERING = "ordering_ptm"
#: PTM labels of one element's sublattice (``--sublattice``; other atoms -1), after / before denoising
VAR_SUBLATTICE = "structure_ptm_sublattice"
ATTR_SUBLATTICE = "sublattice"  # the element whose sublattice VAR_SUBLATTICE labels


def ordering_var(raw: bool = False) -> str:
    """Name of the PTM chemical-ordering variable after (or before, ``raw``) denoising."""
    return VAR_ORDERING + ("_raw" if raw else "")


def sublattice_var(raw: bool = False) -> str:
    """Name of the sublattice PTM label variable after (or before, ``raw``) denoising."""
    return VAR_SUBLATTICE + ("_raw" if raw else "")


#: label variables besides the per-classifier ones, each (after, before) denoising
EXTRA_LABEL_VARS = (ordering_var(False), ordering_var(True), sublattice_var(False), sublattice_var(True))


def structure_var(classifier: str, raw: bool = False) -> str:
    """Name of the label variable for ``classifier`` ("acna" or "ptm"), before (raw) or after denoising."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; expected one of {CLASSIFIERS}")
    return f"structure_{classifier}" + ("_raw" if raw else "")


# --- per-frame status codes: why denoising stopped (VAR_STATUS) ------------------------------------
FRAME_STATUS_CONVERGED = 0  # RMS update below tol (tol 0: the k iterations asked for ran)
#: k iterations reached with atoms still moving: the expected outcome where a frame holds liquid or other
#: disordered regions (their atoms have no crystal site to settle on); a valid result, not a failure.
#: VAR_MOBILE_FRACTION says how much of the frame was still moving.
FRAME_STATUS_MAX_ITERATIONS = 1
FRAME_STATUS_DIVERGED = 2  # RMS update grew / atoms overlapped: positions are the raw ones
FRAME_STATUS_FAILED = 3  # the task raised an unexpected error; nothing but this flag is valid; not complete
FRAME_STATUS_BAD_INPUT = 4  # the frame cannot be used as input (unreadable, non-finite, ...); not complete
FRAME_STATUS_OUT_OF_SCOPE = 5  # the model cannot apply to the frame (see VAR_SCOPE): positions are the raw ones
FRAME_STATUS_NAMES = {0: "converged", 1: "max_iterations", 2: "diverged", 3: "failed", 4: "bad_input",
                      5: "out_of_scope"}
#: statuses whose denoised positions and labels are a valid result (out of scope: the raw ones, faithfully)
FRAME_STATUS_VALID = (FRAME_STATUS_CONVERGED, FRAME_STATUS_MAX_ITERATIONS, FRAME_STATUS_OUT_OF_SCOPE)
#: statuses of frames that hold no result (their ``complete`` stays False; a resume retries them)
FRAME_STATUS_NO_RESULT = (FRAME_STATUS_FAILED, FRAME_STATUS_BAD_INPUT)
#: earlier names of the same codes (stores written with them open unchanged: the codes did not change)
FRAME_STATUS_OK = FRAME_STATUS_CONVERGED
FRAME_STATUS_NOT_CONVERGED = FRAME_STATUS_MAX_ITERATIONS

# --- per-atom scope codes (VAR_SCOPE): why an atom was left where it was (trajden.scope) -------------------
SCOPE_DENOISED = 0  # denoised
SCOPE_MOVE_BOUND = 1  # its neighbourhood moved further than any thermal crystal the model knows: left raw
SCOPE_FRAME = 2  # most of the frame moved so: the whole frame left raw
SCOPE_SPECIES = 3  # the input's elements are not covered by the model: left raw
SCOPE_NO_SCALE = 4  # no length scale could be estimated (dilute gas, molecules): left raw
SCOPE_SURFACE = 5  # at a free surface (slab, particle, void; the models know bulk lattices only): left raw
SCOPE_NAMES = {0: "denoised", 1: "move_bound", 2: "frame_out_of_scope", 3: "species_not_covered",
               4: "no_length_scale", 5: "free_surface"}

# --- per-frame evaluator codes (VAR_EVALUATOR) ---------------------------------------------------
EVALUATOR_EAGER = 0  # eager torch: bit-identical whatever the thread count or the blocks
EVALUATOR_COMPILED = 1  # torch.compile'd code in at least one evaluation: equal to eager to float32 rounding
EVALUATOR_NAMES = {0: "eager", 1: "compiled"}

# --- store attributes ------------------------------------------------------------------------
ATTR_VERSION = "trajden_version"
ATTR_MODEL = "model_name"
ATTR_MODEL_SHA256 = "model_sha256"
ATTR_ITERATIONS = "max_iterations"
ATTR_TOL = "tol"
ATTR_CLASSIFIERS = "classifiers"
ATTR_INPUTS = "inputs"
ATTR_COMMAND = "command_line"
ATTR_METHOD = "method"
ATTR_RUN_CONFIG = "run_config"  # JSON string: every setting that must match for a resume
ATTR_EVALUATOR_OPTIONS = "evaluator_options"  # JSON {"compile", "fused", "aggregate"}: trajden.evaluator.*
ATTR_EXECUTION = "execution"  # how the creating run ran frames: "serial", "local", "slurm", "scheduler"
ATTR_EXECUTION_REASON = "execution_reason"  # why (e.g. "small input: 20 frames x 5324 atoms < ...")
ATTR_STORE_FORMAT = "trajden_store_format"  # int, store layout version; marks a directory as a trajden store
ATTR_SPECIES = "species"  # JSON {"type": "element"} of the types whose element is known; also a run_config key
ATTR_MODEL_SPECIES = "model_species"  # JSON {"element": model species index} (trajden.model.coverage)
ATTR_SPECIES_SOURCE = "species_source"  # where the elements came from (trajden.io.species.ORIGIN_*), "" if unknown

# --- element codes (VAR_ELEMENT) -----------------------------------------------------------------
ELEMENT_UNKNOWN = 0  # atomic number stored for an atom whose element is unknown
ELEMENT_UNKNOWN_NAME = "unknown"  # its flag meaning

# --- CF attribute names (per variable, and the root's coordinates list) ----------------------
CF_UNITS = "units"
CF_LONG_NAME = "long_name"
CF_COMMENT = "comment"
CF_FLAG_VALUES = "flag_values"
CF_FLAG_MEANINGS = "flag_meanings"
CF_COORDINATES = "coordinates"

# --- store files -----------------------------------------------------------------------------
STORE_LOCK = ".trajden_lock"  # run lock inside the store: a zarr group dir present while a run holds it

# --- model metadata keys (TorchScript _extra_files) -----------------------------------------
META_FILE = "trajden_metadata.json"

# --- OVITO modifier outputs (trajden.ovito.DenoiseModifier) ----------------------------------------
OVITO_RAW_POSITION = "Raw Position"  # particle property: the input positions
OVITO_DISPLACEMENT = "Denoising Displacement"  # particle property: |denoised - raw|, angstrom
OVITO_SCOPE = "Denoising Scope"  # particle property: SCOPE_* code, 0 denoised, else why the particle was left raw
OVITO_ATTR_PREFIX = "Denoising."  # global attributes: iterations, residual, scale, status, status_name
