"""Continuous speech tokens: a linear map into the LLM and the flow-matching head out of it.

A payload is the token itself (``P = D``). Training may add Gaussian noise to the tokens the LLM
reads (``input_noise``), so that the model learns to read back its own imperfect samples; the
targets and the flow head's prior stay clean.

Scale: at a speech position the LLM reads the *sum* of the text embedding, the state embedding and
the projected token. A normalised mel token has hundreds of unit-variance dims, so a plain linear
projection soon dwarfs the text embedding (rows of norm about ``0.02 * sqrt(W)``) and the text
stream becomes nearly invisible at speech positions. ``input_norm`` puts an RMSNorm after the
projection with its gain starting at the embeddings' scale (``embedding_scale``: 0.02 for a freshly
initialised LLM, the measured RMS of a pretrained one's rows), so both streams start equal and
training decides their balance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flow_omni.models.flow_head import FlowHead, FlowHeadConfig, FlowNoise
from flow_omni.models.speech_head import EMBEDDING_SCALE, ItemRows, SpeechHead


class ContinuousSpeech(SpeechHead):
    """``Linear(D → W)`` in, :class:`~flow_omni.models.flow_head.FlowHead` out."""

    def __init__(
        self,
        flow: FlowHeadConfig,
        width: int,
        *,
        input_noise: float = 0.0,
        input_norm: bool = False,
        embedding_scale: float = EMBEDDING_SCALE,
    ) -> None:
        super().__init__()
        self.payload_dim = flow.token_dim
        self.input_noise = input_noise
        proj = nn.Linear(flow.token_dim, width)
        self.output_head = FlowHead(flow)
        nn.init.normal_(proj.weight, std=0.02)
        nn.init.zeros_(proj.bias)
        self.input_layer = proj
        if input_norm:
            norm = nn.RMSNorm(width, eps=1e-6)
            nn.init.constant_(norm.weight, embedding_scale)
            self.input_layer = nn.Sequential(proj, norm)

    @property
    def flow_head(self) -> FlowHead:
        """The flow head (the whole ``output_head`` here; a part of it in subclasses)."""
        return self.output_head

    def payloads(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return tokens

    def embed(self, payloads: torch.Tensor) -> torch.Tensor:
        return self.input_layer(payloads)

    def perturb(
        self,
        payloads: torch.Tensor,
        lengths: torch.Tensor,
        item_gens: Sequence[torch.Generator] | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if not self.training or self.input_noise <= 0:
            return payloads
        if item_gens is None:
            noise = torch.randn(payloads.shape, generator=generator, device=payloads.device)
        else:
            # Draw for the item's real positions only: the draws that follow from the same generator
            # must not depend on how long the batch was padded.
            noise = torch.zeros(payloads.shape, device=payloads.device)
            for row, g in enumerate(item_gens):
                n = int(lengths[row])
                noise[row, :n] = torch.randn((n, *payloads.shape[2:]), generator=g, device=payloads.device)
        return payloads + self.input_noise * noise

    def training_previous(
        self,
        cond: torch.Tensor,
        payloads: torch.Tensor,
        speech_mask: torch.Tensor,
        item_gens: Sequence[torch.Generator] | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Scheduled sampling of the prior's centre (``FlowHeadConfig.own_previous``): a payload that
        is itself a target is replaced, for that fraction of rows, by the head's greedy sample of it
        from the previous position (no gradient), chained ``own_previous_rounds`` times."""
        cfg = self.flow_head.config
        if not self.training or cfg.own_previous <= 0:
            return payloads
        # Position t's payload is sampled from position t-1, which must predict a target.
        sampled = torch.zeros_like(speech_mask)
        sampled[:, 1:] = speech_mask[:, :-1]
        draws = torch.ones(speech_mask.shape, device=payloads.device)  # 1 is never < own_previous
        if item_gens is None:
            draws[sampled] = torch.rand(int(sampled.sum()), generator=generator, device=payloads.device)
        else:
            # One draw per position the item can use, not per padded position: the loss's draws that
            # follow from the same generator must not depend on how long the batch was padded.
            for row, g in enumerate(item_gens):
                n = int(sampled[row].sum())
                draws[row, sampled[row]] = torch.rand(n, generator=g, device=payloads.device)
        use = (draws < cfg.own_previous) & sampled
        if not bool(use.any()):
            return payloads
        src = sampled[:, 1:]  # (B, L-1): positions t-1 whose sample lands at t
        z = cond[:, :-1][src].detach()
        own = payloads
        with torch.no_grad():
            for _ in range(cfg.own_previous_rounds):
                prev = own[:, :-1][src]
                # The fast sampler caches modulations keyed on the weights' version counters, which
                # the (non-fused) AdamW step bumps, so the samples follow the weights as they train.
                out = self.flow_head.sample(
                    z,
                    prev=prev,
                    steps=cfg.own_previous_steps,
                    solver="euler",
                    temperature=0.0,
                    noise=torch.zeros_like(prev),  # greedy: no draw from any generator
                )
                nxt = own.clone()
                nxt[:, 1:][src] = out.to(own.dtype)
                own = nxt
        return torch.where(use[..., None], own, payloads)

    def loss(
        self,
        cond: torch.Tensor,
        target: torch.Tensor,
        prev: torch.Tensor,
        *,
        item_rows: ItemRows | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        noise = None
        if item_rows is not None:
            noise = FlowNoise.cat([self.flow_head.draw_noise(n, generator=g, device=cond.device) for n, g in item_rows])
        return self.flow_head.loss(target, cond, prev=prev, generator=generator, noise=noise)

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
        noise = torch.stack([torch.randn(self.payload_dim, generator=g) for g in generators]).to(cond.device)
        return self.flow_head.sample(
            cond,
            prev=prev,
            steps=steps,
            solver=solver,
            temperature=temperature,
            cfg_scale=cfg_scale,
            noise=noise,
            compile=compile,
        )

    def to_tokens(self, payloads: torch.Tensor) -> torch.Tensor:
        return payloads
