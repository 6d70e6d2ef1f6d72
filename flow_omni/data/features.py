"""A disk cache of per-file features, so that each audio file is decoded and analysed once.

The cache stores features that do not depend on anything the model learns: the raw Vocos log-mel
``(n_mels, F)`` of every file (speech targets and the conv encoder's input are derived from it by
the model's own normalisation, which therefore may change without invalidating the cache), and,
for a Whisper encoder, Whisper's log-mel. A key is the SHA-1 of the file's absolute path, size and
modification time plus the feature's own spec, so editing or replacing a file, or changing the mel
settings, makes a new entry instead of serving a stale one. Entries are safetensors files written
atomically; a damaged entry is recomputed, not trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flow_omni.audio.io import load_audio
from flow_omni.audio.mel import LogMel, MelConfig
from flow_omni.checkpoint import atomic_write
from flow_omni.errors import AudioError, FlowOmniError

CACHE_VERSION = 1


@contextmanager
def about_file(path: str | Path) -> Iterator[None]:
    """Re-raise an error of featurising ``path`` as an :class:`AudioError` that names the file.

    The feature code sees a waveform, not where it came from ("audio for LogMel: 240 samples is too
    short"); the user needs to know which file to fix or drop.
    """
    try:
        yield
    except FlowOmniError as exc:
        if str(path) in str(exc):  # load_audio's errors name it already
            raise
        raise AudioError(f"cannot featurise {path}: {exc}") from None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    def __str__(self) -> str:
        total = self.hits + self.misses
        return f"{self.hits}/{total} feature-cache hits"


class FeatureCache:
    """Features of audio files, computed on a miss and stored under ``root`` (None: no disk cache).

    ``mel(path)`` gives the raw Vocos log-mel ``(n_mels, F)`` of a 24 kHz mono load of the file;
    ``get(path, kind, spec, compute)`` caches any other feature ``compute(audio (T,)) -> Tensor``.
    """

    def __init__(self, root: str | Path | None, mel: MelConfig | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.mel_config = mel or MelConfig()
        self._logmel: LogMel | None = None
        self.stats = CacheStats()

    def _key(self, path: str | Path, kind: str, spec: dict) -> str:
        p = Path(path).resolve()
        try:
            st = p.stat()
        except FileNotFoundError:
            raise AudioError(f"audio file {path} does not exist") from None
        except OSError as exc:
            raise AudioError(f"cannot read {path} ({exc.strerror or exc})") from None
        ident = json.dumps([CACHE_VERSION, str(p), st.st_size, st.st_mtime_ns, kind, spec], sort_keys=True)
        return hashlib.sha1(ident.encode()).hexdigest()

    def _entry(self, path: str | Path, kind: str, spec: dict) -> Path:
        key = self._key(path, kind, spec)
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, path: str | Path, kind: str, spec: dict) -> bool:
        """Whether features of the file are on disk (a damaged entry counts: :meth:`get` recomputes it)."""
        return self.root is not None and self._entry(path, kind, spec).is_file()

    def load_audio(self, path: str | Path) -> torch.Tensor:
        """The file as a 24 kHz mono waveform ``(T,)`` (the rate of the mel config)."""
        return load_audio(path, sample_rate=self.mel_config.sample_rate)

    def get(
        self,
        path: str | Path,
        kind: str,
        spec: dict,
        compute: Callable[[torch.Tensor], torch.Tensor],
        audio: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cached ``compute(audio)`` for the file; ``audio`` may be passed when it is already loaded."""
        entry = None
        if self.root is not None:
            entry = self._entry(path, kind, spec)
            if entry.is_file():
                try:
                    feats = load_file(str(entry))["features"]
                    self.stats.hits += 1
                    return feats
                except (SafetensorError, KeyError, OSError, ValueError):
                    pass  # damaged entry (e.g. a disk filled up): recompute and overwrite below
        self.stats.misses += 1
        if audio is None:
            audio = self.load_audio(path)
        with about_file(path):
            feats = compute(audio).detach().float().contiguous()
        if entry is not None:
            atomic_write(entry, lambda tmp: save_file({"features": feats}, str(tmp)))
        return feats

    def mel(self, path: str | Path, audio: torch.Tensor | None = None) -> torch.Tensor:
        """Raw Vocos log-mel ``(n_mels, F)`` of the file."""
        if self._logmel is None:
            self._logmel = LogMel(self.mel_config)
        return self.get(path, "vocos_mel", self.mel_config.to_dict(), self._logmel, audio)

    def __len__(self) -> int:
        if self.root is None or not self.root.is_dir():
            return 0
        return sum(1 for _ in self.root.glob("*/*.safetensors"))

    def size_bytes(self) -> int:
        if self.root is None or not self.root.is_dir():
            return 0
        return sum(os.path.getsize(p) for p in self.root.glob("*/*.safetensors"))
