"""The speech stream's interface: what FlowOmni needs from any kind of speech token.

FlowOmni never asks which kind of speech token it speaks. It holds one :class:`SpeechHead` and
calls the same methods whatever is behind them (as MAR's ``mar.py`` calls ``diffloss(z, target)``
and ``diffloss.sample(z, …)``):

* :class:`~flow_omni.models.continuous_speech.ContinuousSpeech`: continuous tokens, read through a
  linear map and sampled by the flow-matching head (the Flow-Omni model);
* :class:`~flow_omni.models.speech_codes.CodeSpeech`: quantiser codes (k-means, RVQ with Mini-Omni's
  per-level delay), read through embeddings and predicted by a softmax (the discrete baselines);
* :class:`~flow_omni.models.coarse_fine_speech.CoarseFineSpeech`: continuous tokens, each predicted
  as a k-means code by a softmax and refined from the code's centroid by the flow head.

A new kind of speech token (a VAE latent, another codec) is one new subclass.

Vocabulary:

* a *token* is a continuous speech token ``(D,)``, ``D = r * n_mels`` (what the mel tokenizer
  makes and decodes);
* a *payload* ``(P,)`` is what one speech position of the sequence holds: the token itself, or
  one code per quantiser level. Payloads are float tensors in the generation loop so that one
  tensor type carries both kinds;
* a run of ``n`` tokens occupies ``n + tail`` positions (``tail > 0`` when deeper code levels lag).

Shapes: ``B`` batch, ``L`` positions, ``N`` rows (speech positions gathered), ``W`` LLM width.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from flow_omni.errors import FlowOmniError

#: The std of a freshly initialised LLM's embedding rows (transformers' initializer_range): the scale at
#: which speech and state embeddings start, since they are summed with the text embedding.
EMBEDDING_SCALE = 0.02

#: The random source of each item of a batch: ``(rows of that item, its generator)`` in row order.
ItemRows = Sequence[tuple[int, torch.Generator]]


class SpeechHead(nn.Module):
    """Base class: subclasses set the attributes and implement the methods below.

    Attributes:
        payload_dim: ``P``, numbers per speech position.
        pad_value: the payload value of a slot that holds no token.
        tail: extra positions after the last token of a run.
        input_layer: the module that embeds payloads (the trainable group ``speech_in``).
        output_head: the module that predicts the next payload (the group ``speech_head``).
    """

    payload_dim: int
    pad_value: float = 0.0
    tail: int = 0
    input_layer: nn.Module
    output_head: nn.Module

    # ------------------------------------------------------------------------------ inputs
    def payloads(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Teacher-forced tokens ``(B, L, D)`` + speech states ``(B, L)`` → payloads ``(B, L, P)``."""
        raise NotImplementedError

    def embed(self, payloads: torch.Tensor) -> torch.Tensor:
        """Payloads ``(…, P)`` → LLM input embeddings ``(…, W)``."""
        raise NotImplementedError

    def perturb(
        self,
        payloads: torch.Tensor,
        lengths: torch.Tensor,
        item_gens: Sequence[torch.Generator] | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Training-time corruption of the payloads the LLM reads ``(B, L, P)``, of which item ``b``'s
        first ``lengths[b]`` positions are real (the rest padding); none by default."""
        return payloads

    # ------------------------------------------------------------------------------ outputs
    def training_previous(
        self,
        cond: torch.Tensor,
        payloads: torch.Tensor,
        speech_mask: torch.Tensor,
        item_gens: Sequence[torch.Generator] | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The previous payloads :meth:`loss` is given ``(B, L, P)``: the teacher-forced ``payloads`` by
        default. cond ``(B, L, W)``; speech_mask ``(B, L)``, True where the next payload is a target."""
        return payloads

    def loss(
        self,
        cond: torch.Tensor,
        target: torch.Tensor,
        prev: torch.Tensor,
        *,
        item_rows: ItemRows | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Scalar loss of predicting ``target`` payloads ``(N, P)`` from conditions ``(N, W)``.

        ``prev`` ``(N, P)`` holds each row's previous payload. Random draws come from
        ``item_rows`` when given (so a row's draws depend on its sample alone), else ``generator``.
        """
        raise NotImplementedError

    #: whether :meth:`loss_terms` gives a second, code cross-entropy term (coarse_fine)
    has_code_loss: bool = False

    def loss_terms(
        self,
        cond: torch.Tensor,
        target: torch.Tensor,
        prev: torch.Tensor,
        *,
        item_rows: ItemRows | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`loss` in the terms FlowOmni logs and weighs apart: ``(speech term, code
        cross-entropy or None)``; heads with one term return ``(loss, None)``."""
        return self.loss(cond, target, prev, item_rows=item_rows, generator=generator), None

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
        """One next payload per row: conditions ``(n, W)``, previous payloads ``(n, P)`` → ``(n, P)`` float.

        Row ``i`` draws from ``generators[i]``. ``steps``, ``solver``, ``cfg_scale`` and ``compile``
        are the ODE settings of heads that integrate one; others ignore them.
        """
        raise NotImplementedError

    def to_tokens(self, payloads: torch.Tensor) -> torch.Tensor:
        """Payloads of one run so far ``(m, P)`` → its complete tokens ``(max(m - tail, 0), D)``."""
        raise NotImplementedError

    def represent(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(n, D)`` → ``(n, D)``: the closest tokens this head can speak. A quantiser's round trip
        for code heads; the tokens themselves for heads that speak continuous tokens. Decoded and heard,
        they are the ceiling a perfect predictor of this head would reach."""
        return tokens

    # ------------------------------------------------------------------------------ fitting
    @property
    def needs_fit(self) -> bool:
        """Whether :meth:`fit` must run on speech tokens before training (e.g. a codebook)."""
        return False

    def fit(self, tokens: torch.Tensor | Iterable[torch.Tensor], *, tokenizer=None, progress: bool = False) -> dict:
        """Fit what the head learns from data before training; returns its config to store."""
        raise FlowOmniError(f"{type(self).__name__} has nothing to fit on speech tokens")
