"""Data: the JSONL manifest, corpus builders, importers, validation, datasets and the feature cache."""

from flow_omni.data.importers import ImportResult, import_librispeech, import_wav_txt
from flow_omni.data.manifest import ManifestEntry, ManifestError, Segment, iter_manifest, read_manifest, write_manifest
from flow_omni.data.validate import ValidationReport, validate_manifest

__all__ = [
    "ImportResult",
    "ManifestEntry",
    "ManifestError",
    "Segment",
    "ValidationReport",
    "import_librispeech",
    "import_wav_txt",
    "iter_manifest",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
]
