"""Data: the JSONL manifest, corpus builders, importers, datasets and the feature cache."""

from flow_omni.data.manifest import ManifestEntry, ManifestError, Segment, iter_manifest, read_manifest, write_manifest

__all__ = ["ManifestEntry", "ManifestError", "Segment", "iter_manifest", "read_manifest", "write_manifest"]
