"""Objective metrics for generated speech: log-mel distance, mel-cepstral distortion, QA accuracy.

All mel inputs are the Vocos log-mel of :mod:`flow_omni.audio.mel` (natural log of a magnitude
mel, ``(n_mels, F)``), floored at :data:`~flow_omni.audio.mel.LOG_MEL_FLOOR` before comparison so
that digital silence (``log 0`` clamped differently by different code paths) cannot dominate.

Mel-cepstral distortion (MCD). The mel-cepstrum of a frame is the orthonormal DCT-II of its log-mel
over the mel bins (``scipy.fft.dct(type=2, norm="ortho")``, as ``librosa.feature.mfcc``); the first
``n_coeffs`` coefficients ``c0 … c(n_coeffs-1)`` are kept and ``c0`` (overall level) is dropped.
Per frame::

    MCD = 10 / ln 10 · sqrt(2 · Σ_{d=1}^{n_coeffs-1} (c_d − c'_d)²)   [dB]

The ``10/ln 10`` factor converts natural-log (neper) cepstra to decibels, which is why the log-mel
is used as is: a log10 mel would first be multiplied by ``ln 10``. A constant offset of the log-mel
(a gain change) only moves ``c0`` and so gives MCD 0. The result is the mean over aligned frame
pairs: by truncation to the common length, or along a dynamic-time-warping path (``align="dtw"``,
Euclidean distance between the cepstra without ``c0``, steps (1,0), (0,1), (1,1)).
Absolute values depend on these conventions (mel filterbank, DCT scaling, number of coefficients),
so compare MCDs computed here with each other, not with numbers from other toolkits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.fft
import torch

from flow_omni.audio.mel import LOG_MEL_FLOOR
from flow_omni.data.texts import score_answer
from flow_omni.errors import MelShapeError

#: 10 / ln(10) · sqrt(2): the MCD constant (dB per unit of cepstral Euclidean distance).
MCD_CONSTANT = 10.0 / math.log(10.0) * math.sqrt(2.0)

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(mel: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(mel).detach().cpu()
    if not t.is_floating_point():
        t = t.float()
    if t.dim() < 2:
        raise MelShapeError(f"{name}: expected a mel of shape (n_mels, F) or (B, n_mels, F), got {tuple(t.shape)}")
    return t


def mel_distance(generated_mel: ArrayLike, reference_mel: ArrayLike) -> float:
    """Mean |Δ log-mel| (nats) over the common frames of two mels, both floored at the log-mel floor.

    Shapes ``(n_mels, F)`` (or with matching leading batch dims); the longer mel is truncated.
    Raises:
        MelShapeError: different numbers of bins, or no common frame.
    """
    g, r = _as_tensor(generated_mel, "generated_mel"), _as_tensor(reference_mel, "reference_mel")
    if g.shape[:-1] != r.shape[:-1]:
        raise MelShapeError(f"mel_distance: shapes {tuple(g.shape)} and {tuple(r.shape)} differ before the frame axis")
    n = min(g.shape[-1], r.shape[-1])
    if n == 0:
        raise MelShapeError("mel_distance: a mel has no frames")
    g = g[..., :n].clamp_min(LOG_MEL_FLOOR)
    r = r[..., :n].clamp_min(LOG_MEL_FLOOR)
    return float((g.double() - r.double()).abs().mean())


def mel_cepstrum(mel: ArrayLike, n_coeffs: int = 13) -> np.ndarray:
    """``(n_mels, F)`` log-mel (floored) → ``(F, n_coeffs)`` cepstra ``c0 … c(n_coeffs-1)`` (orthonormal DCT-II)."""
    m = _as_tensor(mel, "mel")
    if m.dim() != 2:
        raise MelShapeError(f"mel_cepstrum: expected (n_mels, F), got {tuple(m.shape)}")
    if isinstance(n_coeffs, bool) or not isinstance(n_coeffs, int) or not 2 <= n_coeffs <= m.shape[0]:
        raise ValueError(f"n_coeffs must be an integer in [2, n_mels={m.shape[0]}], got {n_coeffs!r}")
    x = m.clamp_min(LOG_MEL_FLOOR).double().numpy()
    if not np.isfinite(x).all():
        raise MelShapeError("mel_cepstrum: mel contains NaN or inf")
    return scipy.fft.dct(x, type=2, norm="ortho", axis=0)[:n_coeffs].T


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-total-cost monotone alignment of a ``(N, M)`` local cost matrix.

    Steps (1,0), (0,1), (1,1) with equal weight, from (0,0) to (N-1,M-1). Returns the index arrays
    ``(i, j)`` of the path (length between ``max(N, M)`` and ``N + M - 1``).
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"dtw_path: expected a non-empty (N, M) cost matrix, got shape {cost.shape}")
    n, m = cost.shape
    acc = np.empty((n, m))
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        # Best of the moves from the row above, then the horizontal moves within the row:
        # acc[i, j] = min_k≤j (tmp[k] + Σ_{k<l≤j} cost[i, l]) = S[j] + cummin(tmp − S)[j].
        tmp = cost[i].copy()
        tmp[0] += acc[i - 1, 0]
        tmp[1:] += np.minimum(acc[i - 1, 1:], acc[i - 1, :-1])
        s = np.cumsum(cost[i])
        acc[i] = s + np.minimum.accumulate(tmp - s)
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            k = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
        path.append((i, j))
    idx = np.asarray(path[::-1])
    return idx[:, 0], idx[:, 1]


def mel_cepstral_distortion(
    mel_a: ArrayLike, mel_b: ArrayLike, n_coeffs: int = 13, *, align: Literal["truncate", "dtw"] = "truncate"
) -> float:
    """Mean mel-cepstral distortion in dB between two ``(n_mels, F)`` log-mels (see module doc).

    Args:
        n_coeffs: cepstral coefficients computed, ``c0`` included; ``c1 … c(n_coeffs-1)`` are compared.
        align: ``"truncate"`` pairs frame t with frame t over the common length; ``"dtw"`` pairs
            frames along the dynamic-time-warping path (for different durations or speaking rates).
    Raises:
        MelShapeError: not 2-D, different numbers of bins, or an empty mel.
    """
    a, b = _as_tensor(mel_a, "mel_a"), _as_tensor(mel_b, "mel_b")
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise MelShapeError(
            f"mel_cepstral_distortion: expected two (n_mels, F) mels with the same n_mels, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise MelShapeError("mel_cepstral_distortion: a mel has no frames")
    ca, cb = mel_cepstrum(a, n_coeffs)[:, 1:], mel_cepstrum(b, n_coeffs)[:, 1:]
    if align == "truncate":
        n = min(len(ca), len(cb))
        dist = np.sqrt(((ca[:n] - cb[:n]) ** 2).sum(axis=1))
    elif align == "dtw":
        local = np.sqrt(((ca[:, None, :] - cb[None, :, :]) ** 2).sum(axis=-1))
        i, j = dtw_path(local)
        dist = local[i, j]
    else:
        raise ValueError(f"align must be 'truncate' or 'dtw', got {align!r}")
    return float(MCD_CONSTANT * dist.mean())


def qa_accuracy(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Fraction of hypotheses that give exactly their reference answer
    (:func:`flow_omni.data.texts.score_answer`: normalised, lead-in fillers ignored)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not refs:
        raise ValueError("no answers to score")
    return sum(score_answer(h, r) for h, r in zip(hyps, refs)) / len(refs)
