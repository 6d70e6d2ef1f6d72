"""Teacher-forced speech: what a model says when every speech token it reads is the reference's.

Free-running T→A feeds the model its own speech tokens; teacher forcing feeds it the reference's,
so each sampled token is the speech head's prediction from a true history, as in training. The two
together separate what the model has learned to say (teacher-forced) from what feeding back its
own, imperfect tokens costs (free-running): a model whose teacher-forced speech is understood and
whose free-running speech is not suffers from drift (exposure bias), not from a head that cannot
produce speech.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flow_omni.layout import Sample


@torch.no_grad()
def teacher_forced_speech(
    model,
    texts: Sequence[str],
    references: Sequence[torch.Tensor],
    *,
    steps: int = 10,
    solver: str = "euler",
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 8,
    alignments: Sequence[Sequence[tuple[int, float]] | None] | None = None,
    previous: str = "reference",
) -> list[torch.Tensor]:
    """The log-mel ``(n_mels, F)`` that ``model`` samples for each T→A item when, at every speech position,
    the LLM has read the reference's tokens before it.

    ``texts[i]`` is the prompt and ``references[i]`` its spoken reference, a raw log-mel ``(n_mels, F)``
    (``model.speech_tokenizer.mel(audio)``). Each of the item's speech positions gets one token from the
    speech head, given the condition there and the reference's previous token (the flow head's
    ``prior="previous"`` starts from it; a coarse_fine head starts from its code's centroid instead, so
    ``previous`` changes nothing for it). Item ``i`` draws its noise from one generator seeded with
    ``seed + i``, position after position (at temperature 0, the default, the draws are scaled to
    nothing). The output has the reference's ``F`` frames. ``alignments[i]`` is the word onsets of
    ``texts[i]`` in its reference (:attr:`Sample.target_alignment`), which a model of the ``aligned``
    layout needs to place the text.

    ``previous="own"`` keeps the LLM teacher-forced but gives the speech head its own previous sample
    as the previous token (the first position still gets the reference's, which is the start token),
    one position after another: what the head's prior does to its own errors over a sentence, with
    the LLM's share of the drift taken out.

    Besides the speech tokens, teacher forcing also fixes the text stream, the length and the stop
    to the reference's, so the gap to free-running speech is more than the speech tokens alone.
    """
    if len(texts) != len(references) or (alignments is not None and len(alignments) != len(texts)):
        raise ValueError(
            f"teacher_forced_speech: {len(texts)} texts, {len(references)} references and "
            f"{'no' if alignments is None else len(alignments)} alignments; expected one of each per item"
        )
    if previous not in ("reference", "own"):
        raise ValueError(f"teacher_forced_speech: previous must be 'reference' or 'own', got {previous!r}")
    alignments = alignments if alignments is not None else [None] * len(texts)
    model.eval()
    tok = model.speech_tokenizer
    out: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        refs = references[start : start + batch_size]
        part = slice(start, start + batch_size)
        samples = [
            Sample("T2A", prompt_text=t, target_text=t, target_speech=tok.encode_mel(r), target_alignment=a)
            for t, r, a in zip(texts[part], refs, alignments[part])
        ]
        batch = model.collate(samples).to(model.device)
        payloads = model.speech.payloads(batch.speech, batch.state)
        hidden = model.backbone.base_model(
            inputs_embeds=model.embed_batch(batch, payloads),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state
        cond, _ = model.condition(hidden, batch.attention_mask, batch.position_ids)
        _, _, speech_mask = batch.targets()  # position p whose next position holds a speech token
        for row, ref in enumerate(refs):
            mask = speech_mask[row]
            # The same generator for every row: the head draws from it row after row, in order.
            gen = torch.Generator().manual_seed(seed + start + row)
            conds, prevs = cond[row][mask], payloads[row][mask]
            kw = dict(temperature=temperature, steps=steps, solver=solver, cfg_scale=1.0)
            if previous == "reference":
                sampled = model.speech.sample(conds, prevs, [gen] * len(conds), **kw)
            else:
                own = [prevs[:1]]
                for k in range(len(conds)):
                    own.append(model.speech.sample(conds[k : k + 1], own[-1], [gen], **kw))
                sampled = torch.cat(own[1:])
            out.append(tok.decode(model.speech.to_tokens(sampled), num_frames=ref.shape[-1]).cpu())
    return out
