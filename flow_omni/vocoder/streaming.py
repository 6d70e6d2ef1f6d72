"""Streaming Vocos decode: mel chunks of any size in, final audio chunks out.

Vocos is not causal: the audio of frame ``i`` depends on mel frames ``i - R .. i + R`` with
``R = vocoder.receptive_field`` (27 frames from the backbone convolutions + 2 frames of ISTFT
window overlap = 29 for the 24 kHz model). Overlap-adding independently decoded chunks would
therefore leave seams; instead each emitted stretch of audio is cut out of a decode whose window
extends ``left_context`` / ``right_context`` frames beyond it, so that every emitted sample saw
exactly the same inputs as in an offline decode (up to float rounding, ~1e-6).

Coordinates: frame ``i`` owns samples ``[i * hop, (i + 1) * hop)`` of the offline output
(``(F - 1) * hop`` samples for center padding). Audio for frames ``[a, b)`` is final once frames
up to ``b + right_context`` have arrived. At :meth:`StreamingVocoder.flush` the true end of the
utterance is known, the backbone's zero padding there matches the offline decode, and the rest
is emitted.

Latency: ``right_context`` frames of look-ahead, i.e. 29 × 256 / 24000 s ≈ 309 ms for the default
model, on top of the producer's own chunking. A smaller ``right_context`` lowers latency but
makes the output differ from offline decoding near every chunk edge (trained Vocos models have
an effective receptive field well below the theoretical one, so ~10 frames often sounds fine).

Memory: only the last ``left_context`` frames before the first not-yet-emitted frame and the
frames after it are kept, so a stream of any length uses bounded memory (about ``left_context +
max_new_frames + right_context`` frames plus the last chunk pushed); each emission decodes
``left_context + new + right_context`` frames.

Speed: every decode re-runs ``left_context + right_context`` (58) frames of context around the
frames it emits, so emitting a few frames at a time costs many times an offline decode (8-frame
chunks decode 66 frames per 8 emitted). A growing chunk schedule keeps the first audio early and
the total work close to offline: the first emission waits for ``min_new_frames`` final frames, each
later one for as many new frames as were emitted so far (the stream's length doubles), capped at
``max_new_frames``. A listener who starts playing at the first audio hears no gap as long as
producing and decoding the audio runs at least twice as fast as real time (RTF <= 0.5: the ``E``
frames after the ``E`` already emitted must be final before those have played, counted from the
first audio); once the cap is reached, RTF < 1 suffices. ``max_new_frames=None`` keeps the chunk
size fixed at ``min_new_frames``. Decode timings are in the README's "Benchmarks". On a CPU shared
with other jobs, ``torch.set_num_threads(1)`` made 1-frame streaming ~35× faster than 2 threads
(measured), as small ops stop waiting on each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from flow_omni.audio.mel import check_mel
from flow_omni.errors import MelShapeError
from flow_omni.vocoder.vocos_vocoder import Vocoder


class StreamingVocoder:
    """Incremental Vocos decoder for one utterance at a time.

    Args:
        vocoder: the :class:`Vocoder` to run.
        left_context: frames of past context per decode (default ``vocoder.receptive_field``).
        right_context: frames of look-ahead before audio is final (default
            ``vocoder.receptive_field``); sets the latency (see module docstring).
        min_new_frames: the first emission waits until at least this many frames are final (default
            1: the first audio leaves as soon as possible).
        max_new_frames: largest number of new frames a later emission waits for. Each emission after
            the first waits for ``clamp(frames emitted so far, min_new_frames, max_new_frames)`` new
            final frames (a doubling schedule; see the module docstring). ``None`` (default) keeps
            every emission at ``min_new_frames``. Only the chunking changes: the audio is the same.
    """

    def __init__(
        self,
        vocoder: Vocoder,
        left_context: int | None = None,
        right_context: int | None = None,
        *,
        min_new_frames: int = 1,
        max_new_frames: int | None = None,
    ) -> None:
        rf = vocoder.receptive_field
        self.vocoder = vocoder
        self.left_context = rf if left_context is None else int(left_context)
        self.right_context = rf if right_context is None else int(right_context)
        if self.left_context < 0 or self.right_context < 0 or min_new_frames < 1:
            raise ValueError("left_context and right_context must be >= 0 and min_new_frames >= 1")
        if max_new_frames is not None and max_new_frames < min_new_frames:
            raise ValueError(f"max_new_frames ({max_new_frames}) must be >= min_new_frames ({min_new_frames})")
        self.min_new_frames = min_new_frames
        self.max_new_frames = min_new_frames if max_new_frames is None else int(max_new_frames)
        self.n_mels = vocoder.config.n_mels
        self.hop = vocoder.config.hop_length
        # With center padding a frame's own hop of audio needs the next frame's ISTFT window, and
        # the offline output stops one hop before the last frame.
        self._min_lookahead = 1 if vocoder.config.padding == "center" else 0
        self.reset()

    @property
    def latency_frames(self) -> int:
        """Look-ahead in frames: audio of a frame is final ``right_context`` frames after it arrives."""
        return self.right_context

    @property
    def latency_seconds(self) -> float:
        """:attr:`latency_frames` in seconds (0.309 s for the default model)."""
        return self.right_context * self.hop / self.vocoder.config.sample_rate

    def reset(self) -> None:
        """Forget the current utterance."""
        self._buffer: torch.Tensor | None = None  # (n_mels, kept frames)
        self._offset = 0  # global index of the buffer's first frame
        self._received = 0  # frames pushed so far
        self._emitted = 0  # audio of frames [0, _emitted) has been returned

    @property
    def frames_wanted(self) -> int:
        """New final frames the next emission waits for (the chunk schedule)."""
        return min(max(self._emitted, self.min_new_frames), self.max_new_frames)

    @property
    def frames_received(self) -> int:
        return self._received

    @property
    def samples_emitted(self) -> int:
        return self._emitted * self.hop

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add mel frames ``(n_mels, f)`` (``f >= 0``); return the audio ``(t,)`` that is now final."""
        if not isinstance(chunk, torch.Tensor) or chunk.dim() != 2:
            shape = tuple(chunk.shape) if isinstance(chunk, torch.Tensor) else type(chunk).__name__
            raise MelShapeError(f"streamed mel chunk: expected (n_mels, frames), got {shape}")
        if chunk.shape[-1] == 0:
            return self._empty()
        check_mel(chunk, self.n_mels, name="streamed mel chunk")
        chunk = chunk.detach()
        self._buffer = chunk if self._buffer is None else torch.cat([self._buffer, chunk.to(self._buffer)], dim=-1)
        self._received += chunk.shape[-1]
        final_until = self._received - max(self.right_context, self._min_lookahead)
        if final_until - self._emitted < self.frames_wanted:
            return self._empty()
        return self._emit(final_until, self._received)

    def flush(self) -> torch.Tensor:
        """Return the rest of the audio up to the true end, then :meth:`reset`."""
        if self._buffer is None:
            self.reset()
            return self._empty()
        end_frames = self._received
        n_total = self.vocoder.config.num_samples(end_frames)
        if n_total <= self.samples_emitted:
            self.reset()
            return self._empty()
        audio = self._emit(end_frames, end_frames, n_total_samples=n_total)
        self.reset()
        return audio

    def _emit(self, until: int, window_end: int, n_total_samples: int | None = None) -> torch.Tensor:
        """Decode frames ``[emitted - left, window_end)``; return samples of frames ``[emitted, until)``."""
        start = max(self._emitted - self.left_context, self._offset)
        window = self._buffer[:, start - self._offset : window_end - self._offset]
        audio = self.vocoder.decode(window)  # sample s ↔ global sample start * hop + s
        lo = (self._emitted - start) * self.hop
        hi = (until - start) * self.hop
        if n_total_samples is not None:  # at the end: everything the offline decode would give
            hi = n_total_samples - start * self.hop
        out = audio[lo:hi]
        self._emitted = until
        # Bounded memory: the next decode never reaches further back than emitted - left_context.
        keep_from = max(self._emitted - self.left_context, self._offset)
        if keep_from > self._offset:
            self._buffer = self._buffer[:, keep_from - self._offset :].clone()
            self._offset = keep_from
        return out

    def _empty(self) -> torch.Tensor:
        param = next(self.vocoder.parameters())
        return torch.zeros(0, dtype=param.dtype, device=param.device)


def stream_decode(
    vocoder: Vocoder,
    chunks: Iterable[torch.Tensor],
    left_context: int | None = None,
    right_context: int | None = None,
    *,
    min_new_frames: int = 1,
    max_new_frames: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield audio ``(t,)`` for each mel chunk ``(n_mels, f)`` as soon as it is final, then the rest.

    Empty audio chunks are skipped; concatenating what is yielded equals ``vocoder.decode`` of the
    concatenated mel. ``min_new_frames`` / ``max_new_frames``: the chunk schedule of
    :class:`StreamingVocoder`.
    """
    streamer = StreamingVocoder(
        vocoder, left_context, right_context, min_new_frames=min_new_frames, max_new_frames=max_new_frames
    )
    for chunk in chunks:
        audio = streamer.push(chunk)
        if audio.numel():
            yield audio
    tail = streamer.flush()
    if tail.numel():
        yield tail
