"""Grouping ``r`` consecutive mel frames into one continuous speech token, and back.

A token is the ``r`` frames flattened in time order: ``token[k] = [frame[k*r], …, frame[k*r+r-1]]``
with each frame's ``n_mels`` values contiguous, so ``token.view(r, n_mels)`` gives the frames back.

The tail: when the frame count ``F`` is not a multiple of ``r`` the last token is completed with
``pad_value`` frames (``tail="pad"``, the default), and :func:`ungroup_frames` drops them again
when told the original ``num_frames``. Pad with the silence level of the space you group in
(:data:`LOG_MEL_FLOOR` for raw log-mel, its normalised value otherwise) so that a padded frame
decodes to silence. ``tail="drop"`` discards the incomplete tail instead (training targets where a
few ms do not matter). ``tail="error"`` refuses an incomplete tail.

Shapes: mel ``(n_mels, F)`` or ``(B, n_mels, F)`` ↔ tokens ``(N, r*n_mels)`` or ``(B, N, r*n_mels)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from flow_omni.errors import MelShapeError

TailMode = Literal["pad", "drop", "error"]


def num_tokens(num_frames: int, r: int, tail: TailMode = "pad") -> int:
    """How many tokens ``num_frames`` frames make."""
    return -(-num_frames // r) if tail == "pad" else num_frames // r


def group_frames(mel: torch.Tensor, r: int, *, tail: TailMode = "pad", pad_value: float = 0.0) -> torch.Tensor:
    """``(…, n_mels, F)`` → ``(…, N, r*n_mels)`` (see module docstring for the tail rule)."""
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    if mel.dim() not in (2, 3):
        raise MelShapeError(f"group_frames: expected (n_mels, F) or (B, n_mels, F), got {tuple(mel.shape)}")
    n_mels, frames = mel.shape[-2], mel.shape[-1]
    rem = frames % r
    if rem:
        if tail == "pad":
            mel = F.pad(mel, (0, r - rem), value=pad_value)
        elif tail == "drop":
            mel = mel[..., : frames - rem]
        else:
            raise MelShapeError(f"group_frames: {frames} frames is not a multiple of r={r} (tail='error')")
    if mel.shape[-1] == 0:
        raise MelShapeError(f"group_frames: {frames} frame(s) make no complete token of r={r} (tail='drop')")
    x = mel.transpose(-1, -2)  # (…, F, n_mels)
    return x.reshape(*x.shape[:-2], x.shape[-2] // r, r * n_mels)


def ungroup_frames(tokens: torch.Tensor, r: int, *, num_frames: int | None = None) -> torch.Tensor:
    """``(…, N, r*n_mels)`` → ``(…, n_mels, F)``; crops to ``num_frames`` when given."""
    if tokens.dim() not in (2, 3):
        raise MelShapeError(f"ungroup_frames: expected (N, D) or (B, N, D), got {tuple(tokens.shape)}")
    dim = tokens.shape[-1]
    if dim % r:
        raise MelShapeError(f"ungroup_frames: token size {dim} is not a multiple of r={r}")
    n_mels = dim // r
    x = tokens.reshape(*tokens.shape[:-2], tokens.shape[-2] * r, n_mels).transpose(-1, -2)
    if num_frames is not None:
        if not 0 < num_frames <= x.shape[-1]:
            raise MelShapeError(f"ungroup_frames: num_frames={num_frames} but the tokens hold {x.shape[-1]} frames")
        x = x[..., :num_frames]
    return x.contiguous()
