"""The reader of engine directories (written by :mod:`gaf_trt.export`): the manifest schema,
reading and validating ``manifest.json``, the files and their sha256, compatibility with this
machine, and the description ``gaf-trt info`` shows.

Below :mod:`gaf_trt.engine` (whose runtimes open engine directories through it) and
:mod:`gaf_trt.export` (which writes them); imports only leaves, :mod:`gaf_trt.io` and
:mod:`gaf_trt.model`.
"""

from gaf_trt.enginedir.compat import RuntimeInfo, check_plan_compatible, check_precision
from gaf_trt.enginedir.describe import describe, describe_lines
from gaf_trt.enginedir.files import external_data_files, files_of, verify_files
from gaf_trt.enginedir.manifest import read_manifest, validate_manifest
from gaf_trt.enginedir.schema import (
    MANIFEST,
    REBUILD_HINT,
    EngineCompatibilityError,
    EngineDirError,
)

__all__ = ["MANIFEST", "REBUILD_HINT", "EngineCompatibilityError", "EngineDirError",
           "RuntimeInfo", "check_plan_compatible", "check_precision", "describe",
           "describe_lines", "external_data_files", "files_of", "read_manifest",
           "validate_manifest", "verify_files"]
