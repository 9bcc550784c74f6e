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
VAR_ELEMENT = "element"  # (atom,) int16, atomic number (0 = unknown), CF flag_values/flag_meanings = symbols
VAR_MOBILE_FRACTION = "mobile_fraction"  # (frame,) float32, atoms whose last update exceeded tol (NaN: tol 0)


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
FRAME_STATUS_NAMES = {0: "converged", 1: "max_iterations", 2: "diverged", 3: "failed", 4: "bad_input"}
#: statuses whose denoised positions and labels are a valid result
FRAME_STATUS_VALID = (FRAME_STATUS_CONVERGED, FRAME_STATUS_MAX_ITERATIONS)
#: statuses of frames that hold no result (their ``complete`` stays False; a resume retries them)
FRAME_STATUS_NO_RESULT = (FRAME_STATUS_FAILED, FRAME_STATUS_BAD_INPUT)
#: earlier names of the same codes (stores written with them open unchanged: the codes did not change)
FRAME_STATUS_OK = FRAME_STATUS_CONVERGED
FRAME_STATUS_NOT_CONVERGED = FRAME_STATUS_MAX_ITERATIONS

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
OVITO_ATTR_PREFIX = "Denoising."  # global attributes: iterations, residual, scale, status, status_name
