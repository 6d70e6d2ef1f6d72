"""Coarse-to-fine continuous tokens: a k-means code by softmax, then the flow head refines it.

The LLM reads continuous tokens exactly as :class:`~flow_omni.models.continuous_speech.ContinuousSpeech`
does. Out of it, each next token is predicted in two stages:

1. **coarse:** a softmax over the ``K`` codes of a k-means codebook fitted on the training tokens
   before training (as the k-means baseline fits its own; no pad code here, since the run's end is
   the state stream's), trained with cross-entropy against the target's nearest code
   (``LossWeights.code``, logged as ``code``);
2. **fine:** the flow head, its condition being the LLM's state plus an embedding of that code, and
   its ODE started at the code's centroid (``prior="previous"``, whose centre is here the centroid
   instead of the previous token; with ``prior="gaussian"`` it starts from zero-mean noise and
   knows the code from its condition alone). Its loss is logged as ``flow``.

Why: at the CPU budgets measured here the plain flow head learned the mean of the next token, not
its distribution, and spoke less clearly than the k-means model, whose cross-entropy trains the LLM's
state to pick one sharp token (README, "Models that learn"). Here the cross-entropy gives the LLM
that same signal, and the flow head only has to model what is left within a code's cell. In training
the code is the target's own (teacher-forced); in sampling it is the head's argmax (temperature 0)
or a draw from its softmax at that temperature.

The output stays a continuous token: what the model says is the refined token, and by default what
it reads back is that token, not the code. With ``read_centroids`` (``FlowOmniConfig.
speech_input_centroids``) the LLM reads every speech token as its k-means centroid instead, in
training the true token's and in generation its own refined token's: the input a k-means model reads,
so that its own tokens read back as the kind of input it was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flow_omni.errors import FlowOmniError
from flow_omni.models.continuous_speech import ContinuousSpeech
from flow_omni.models.flow_head import FlowHead, FlowHeadConfig
from flow_omni.models.speech_head import EMBEDDING_SCALE, ItemRows
from flow_omni.quantize.base import Quantizer


class CoarseFineHead(nn.Module):
    """The output side's parameters: ``codes`` ``Linear(W → K)``, ``code_embed`` ``(K, W)`` (added to
    the flow head's condition) and the flow head ``flow``."""

    def __init__(self, flow: FlowHead, width: int, codes: int, embedding_scale: float) -> None:
        super().__init__()
        self.flow = flow
        self.codes = nn.Linear(width, codes)
        self.code_embed = nn.Embedding(codes, width)
        nn.init.normal_(self.code_embed.weight, std=embedding_scale)


class CoarseFineSpeech(ContinuousSpeech):
    """Continuous tokens in; a k-means code (softmax), refined by the flow head, out."""

    def __init__(
        self,
        flow: FlowHeadConfig,
        quantizer: Quantizer,
        width: int,
        *,
        input_noise: float = 0.0,
        input_norm: bool = False,
        embedding_scale: float = EMBEDDING_SCALE,
        read_centroids: bool = False,
    ) -> None:
        super().__init__(flow, width, input_noise=input_noise, input_norm=input_norm, embedding_scale=embedding_scale)
        self.read_centroids = read_centroids
        if flow.own_previous > 0:
            raise FlowOmniError(
                "CoarseFineSpeech starts the flow head at the code's centroid, not at the previous token: "
                f"flow.own_previous must be 0, got {flow.own_previous}"
            )
        if quantizer.num_levels != 1:
            raise FlowOmniError(f"CoarseFineSpeech needs a one-level quantiser (k-means), got {quantizer.num_levels}")
        self.quantizer = quantizer
        self.output_head = CoarseFineHead(self.output_head, width, quantizer.codebook_size, embedding_scale)
        # An ablation switch for sampling only: False skips the flow head and speaks the codes'
        # centroids, i.e. what the coarse stage alone says (benchmarks/tts_teacher_forcing.py --coarse-only).
        self.refine = True

    @property
    def flow_head(self) -> FlowHead:
        return self.output_head.flow

    def code_logits(self, cond: torch.Tensor) -> torch.Tensor:
        """``(N, W)`` → ``(N, K)`` logits of the next token's code (float32)."""
        return self.output_head.codes(cond).float()

    def refine_condition(self, cond: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The flow head's condition ``(N, W)``: the LLM's state plus the code's embedding; codes ``(N,)``."""
        return cond + self.output_head.code_embed(codes).to(cond.dtype)

    def embed(self, payloads: torch.Tensor) -> torch.Tensor:
        """Tokens ``(…, D)`` → ``(…, W)``; with ``read_centroids`` each token is read as its code's centroid."""
        if self.read_centroids:
            payloads = self.quantizer(payloads.float()).to(payloads.dtype)
        return super().embed(payloads)

    def training_previous(
        self,
        cond: torch.Tensor,
        payloads: torch.Tensor,
        speech_mask: torch.Tensor,
        item_gens: Sequence[torch.Generator] | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        return payloads  # the prior starts at the code's centroid, not at the previous token

    has_code_loss = True

    def loss_terms(
        self,
        cond: torch.Tensor,
        target: torch.Tensor,
        prev: torch.Tensor,
        *,
        item_rows: ItemRows | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(flow loss, code cross-entropy)`` of target tokens ``(N, D)`` from conditions ``(N, W)``: the
        flow loss from the target's code's centroid, conditioned on that code; ``prev`` is not used."""
        with torch.no_grad():
            codes = self.quantizer.encode(target.float())[:, 0]
            centre = self.quantizer.decode(codes[:, None]).to(target.dtype)
        code_loss = F.cross_entropy(self.code_logits(cond), codes)
        refine = self.refine_condition(cond, codes)
        return super().loss(refine, target, centre, item_rows=item_rows, generator=generator), code_loss

    def loss(
        self,
        cond: torch.Tensor,
        target: torch.Tensor,
        prev: torch.Tensor,
        *,
        item_rows: ItemRows | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The sum of :meth:`loss_terms` (unweighted; FlowOmni weighs them by ``LossWeights``)."""
        flow, code = self.loss_terms(cond, target, prev, item_rows=item_rows, generator=generator)
        return flow + code

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        prev: torch.Tensor,
        generators: Sequence[torch.Generator],
        *,
        temperature: float,
        steps: int,
        solver: str,
        cfg_scale: float,
        compile: bool = False,
    ) -> torch.Tensor:
        """One token per row: conditions ``(n, W)`` → ``(n, D)``; ``prev`` is not used.

        The code first (argmax at temperature 0, else drawn from the softmax at ``temperature``), then
        the flow head's token from its centroid, its noise scaled by the same ``temperature``. Row
        ``i`` draws its code and then its noise from ``generators[i]``, so rows sharing one generator
        draw as they would one after another. With ``cfg_scale != 1`` the unconditional branch reads
        the learned null condition in place of state and code together (as ``cfg_dropout`` trains
        it); the code itself is not guided."""
        logits = self.code_logits(cond)
        probs = None if temperature == 0 else torch.softmax(logits / temperature, -1).cpu()
        codes, noise = [], []
        for i, g in enumerate(generators):
            codes.append(logits[i].argmax().cpu() if probs is None else torch.multinomial(probs[i], 1, generator=g)[0])
            noise.append(torch.randn(self.payload_dim, generator=g))
        codes_t = torch.stack(codes).to(cond.device)
        if not self.refine:
            return self.quantizer.decode(codes_t[:, None])
        return self.flow_head.sample(
            self.refine_condition(cond, codes_t),
            prev=self.quantizer.decode(codes_t[:, None]),
            steps=steps,
            solver=solver,
            temperature=temperature,
            cfg_scale=cfg_scale,
            noise=torch.stack(noise).to(cond.device),
            compile=compile,
        )

    @torch.no_grad()
    def represent(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tokens themselves when refining (the head speaks continuous tokens); their centroids when
        ``refine`` is off, which is all the coarse stage can say."""
        if self.refine:
            return tokens
        return self.quantizer.decode(self.quantizer.encode(tokens.float()))

    # ------------------------------------------------------------------------------- fitting
    @property
    def needs_fit(self) -> bool:
        return True

    def fit(self, tokens: torch.Tensor | Iterable[torch.Tensor], *, tokenizer=None, progress: bool = False) -> dict:
        """Fit the k-means codebook on tokens ``(N, D)`` (or an iterable of ``(n_i, D)``); returns its config."""
        self.quantizer.fit(tokens, progress=progress, tokenizer=tokenizer)
        return self.quantizer.config.to_dict()
