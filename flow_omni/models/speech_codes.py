"""Discrete speech tokens for the baselines: quantiser codes in, cross-entropy over codes out.

The discrete variants of FlowOmni share everything with the continuous one (backbone, layout, data,
mel tokens, vocoder) except the speech stream: a continuous token is replaced by the codes a
quantiser trained on the same tokens gives it (k-means: one level; residual VQ: ``L`` levels).

* Input: the embedding of a speech position is the sum of one embedding table per level.
* Output: one linear head per level gives logits over ``K`` codes plus a *pad* code.
* Per-level delay (Mini-Omni, for RVQ): at the ``g``-th speech position of a run, level ``l`` carries
  the code of token ``g - l``. Each position therefore predicts the first level of the next token
  while the deeper levels of earlier tokens are still arriving, and a run ends ``L - 1`` positions
  after its last token (the layout's ``speech_tail``). Slots with no token hold the pad code.

A *payload* is what one position holds: ``(L,)`` codes (stored as floats in the generation loop so
that the same tensors carry continuous tokens for the flow model). Runs of speech are delimited by
``STOP`` states, so the parallel, interleaved and MIX layouts are all handled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flow_omni.errors import FlowOmniError
from flow_omni.layout import STATE_GEN, STATE_STOP
from flow_omni.models.speech_head import EMBEDDING_SCALE, ItemRows, SpeechHead


class CodeEmbedding(nn.Module):
    """One embedding table per level (``K`` codes + pad); a position's embedding is their sum."""

    def __init__(self, levels: int, codes: int, width: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(codes, width) for _ in range(levels))

    def forward(self, payload: torch.Tensor) -> torch.Tensor:
        """``(…, levels)`` codes (long or integral floats) → ``(…, W)``."""
        p = payload.long()
        return sum(emb(p[..., lvl]) for lvl, emb in enumerate(self.tables))


class CodeSpeech(SpeechHead):
    """Code embeddings in, per-level code logits out, around a quantiser (``quantizer``)."""

    def __init__(
        self, quantizer: nn.Module, width: int, *, delay: bool = True, embedding_scale: float = EMBEDDING_SCALE
    ) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.levels = int(quantizer.num_levels)
        self.K = int(quantizer.codebook_size)
        self.pad = self.K
        self.payload_dim = self.levels
        self.pad_value = float(self.pad)
        self.tail = self.levels - 1 if (delay and self.levels > 1) else 0
        self.input_layer = CodeEmbedding(self.levels, self.K + 1, width)
        self.output_head = nn.Linear(width, self.levels * (self.K + 1))
        for e in self.input_layer.tables:
            nn.init.normal_(e.weight, std=embedding_scale)

    # ------------------------------------------------------------------------------- payloads
    def _shift(self, codes: torch.Tensor, m: int) -> torch.Tensor:
        """Tokens' codes ``(n, L)`` → ``(m, L)`` payloads of a run of ``m = n + tail`` positions."""
        out = torch.full((m, self.levels), self.pad, dtype=torch.long, device=codes.device)
        n = codes.shape[0]
        for lvl in range(self.levels):
            shift = lvl if self.tail else 0
            out[shift : shift + n, lvl] = codes[:, lvl]
        return out

    def payloads(self, speech: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Continuous tokens at speech positions ``(B, L, D)`` + states ``(B, L)`` → payloads ``(B, L, levels)``."""
        B, L, _ = speech.shape
        out = torch.full((B, L, self.levels), self.pad, dtype=torch.long, device=speech.device)
        is_gen = state == STATE_GEN
        run_id = torch.cumsum(state == STATE_STOP, dim=1)  # a STOP closes a run
        with torch.no_grad():
            for b in range(B):
                rows = is_gen[b].nonzero(as_tuple=True)[0]
                if rows.numel() == 0:
                    continue
                for r in torch.unique(run_id[b, rows]):
                    run = rows[run_id[b, rows] == r]
                    n = run.numel() - self.tail
                    if n < 1:
                        raise FlowOmniError(
                            f"a speech run of {run.numel()} positions is too short for "
                            f"{self.levels} delayed levels (needs >= {self.tail + 1})"
                        )
                    codes = self.quantizer.encode(speech[b, run[:n]].float())
                    out[b, run] = self._shift(codes, run.numel())
        return out

    def embed(self, payloads: torch.Tensor) -> torch.Tensor:
        return self.input_layer(payloads)

    # --------------------------------------------------------------------------- train / sample
    def logits(self, cond: torch.Tensor) -> torch.Tensor:
        """``(N, W)`` → ``(N, levels, K + 1)``."""
        return self.output_head(cond).view(cond.shape[0], self.levels, self.K + 1)

    def loss(
        self,
        cond: torch.Tensor,
        target: torch.Tensor,
        prev: torch.Tensor,
        *,
        item_rows: ItemRows | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy over rows and levels (no random draws); ``target`` ``(N, levels)`` payloads."""
        logits = self.logits(cond)
        return F.cross_entropy(logits.reshape(-1, self.K + 1).float(), target.long().reshape(-1))

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        prev: torch.Tensor,
        generators: Sequence[torch.Generator],
        *,
        temperature: float,
        steps: int = 0,
        solver: str = "",
        cfg_scale: float = 1.0,
        compile: bool = False,
    ) -> torch.Tensor:
        """One payload per row ``(n, levels)`` (codes as floats); temperature 0 = greedy."""
        logits = self.logits(cond).float()
        if temperature == 0:
            return logits.argmax(-1).float()
        probs = torch.softmax(logits / temperature, -1).cpu()
        rows = [torch.multinomial(probs[i], 1, generator=g)[:, 0] for i, g in enumerate(generators)]
        return torch.stack(rows).to(cond.device).float()

    @torch.no_grad()
    def to_tokens(self, payloads: torch.Tensor) -> torch.Tensor:
        """Token ``t`` is complete once position ``t + tail`` exists, so the same call serves a
        finished run and one still streaming. A pad code where a real code belongs (the model's
        mistake) decodes as code 0."""
        p = payloads.long()
        n = p.shape[0] - self.tail
        if n <= 0:
            return torch.zeros(0, self.quantizer.dim, device=p.device)
        codes = torch.stack(
            [p[(lvl if self.tail else 0) : (lvl if self.tail else 0) + n, lvl] for lvl in range(self.levels)], dim=-1
        )
        codes = torch.where(codes >= self.K, torch.zeros_like(codes), codes)
        return self.quantizer.decode(codes)

    @torch.no_grad()
    def represent(self, tokens: torch.Tensor) -> torch.Tensor:
        """The quantiser's round trip: each token ``(n, D)`` replaced by the decoding of its codes."""
        return self.quantizer.decode(self.quantizer.encode(tokens.float()))

    # ------------------------------------------------------------------------------- fitting
    @property
    def needs_fit(self) -> bool:
        return True

    def fit(self, tokens: torch.Tensor | Iterable[torch.Tensor], *, tokenizer=None, progress: bool = False) -> dict:
        """Fit the quantiser on tokens ``(N, D)`` (or an iterable of ``(n_i, D)``); returns its config."""
        self.quantizer.fit(tokens, progress=progress, tokenizer=tokenizer)
        return self.quantizer.config.to_dict()
