"""Held-out evaluation of a FlowOmni under listening conditions (clean, noise at an SNR, …).

A *condition* is a string: ``clean``, ``<noise>@<snr_db>`` (``white@10``, ``babble@0``; noise
kinds as in :mod:`flow_omni.audio.noise`), ``pitch@<semitones>``, ``speed@<factor>`` or
``reverb@<rt60_seconds>`` (a synthetic room, :func:`flow_omni.audio.perturb.add_reverb`). It is
applied to the *input* audio of the ASR task; the noise of each utterance is drawn from a seed
fixed by the utterance and the condition, so two models evaluated under the same condition hear
exactly the same noisy audio (a before/after comparison is paired).

Metrics: ASR through the model's own A→T mode (greedy) scored by CER/WER; TTS (T→A, greedy,
temperature 0) scored by the mean absolute log-mel difference to the reference over the common
length, with the reference and generated mels floored at the log-mel floor.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from flow_omni.audio.augment import synthetic_babble_pool
from flow_omni.audio.io import load_audio
from flow_omni.audio.noise import NOISE_KINDS, make_noise, mix_at_snr
from flow_omni.audio.perturb import MAX_RT60, add_reverb, pitch_shift, speed_perturb
from flow_omni.data.manifest import ManifestEntry, read_manifest
from flow_omni.errors import ConfigError
from flow_omni.eval.audio_metrics import mel_distance
from flow_omni.eval.samples import SampleLog
from flow_omni.eval.text_metrics import cer, wer
from flow_omni.layout import Sample
from flow_omni.vocoder import load_vocoder

#: Condition kinds besides the noises: a pitch shift, a rate change, a room.
OTHER_KINDS = ("pitch", "speed", "reverb")


def parse_condition(cond: str) -> tuple[str, float | None]:
    """``"babble@5"`` → ``("babble", 5.0)``; ``"clean"`` → ``("clean", None)``."""
    if cond == "clean":
        return "clean", None
    kind, sep, value = cond.partition("@")
    if not sep:
        raise ConfigError(
            f"condition {cond!r}: expected 'clean', '<noise>@<snr_db>', 'pitch@<semitones>', 'speed@<factor>'"
            " or 'reverb@<rt60_seconds>'"
        )
    try:
        v = float(value)
    except ValueError:
        raise ConfigError(f"condition {cond!r}: {value!r} is not a number") from None
    if kind not in NOISE_KINDS and kind not in OTHER_KINDS:
        raise ConfigError(f"condition {cond!r}: unknown kind {kind!r}; valid: {list(NOISE_KINDS) + list(OTHER_KINDS)}")
    if kind == "speed" and v <= 0:
        raise ConfigError(f"condition {cond!r}: speed factor must be > 0")
    if kind == "reverb" and not 0 < v <= MAX_RT60:
        raise ConfigError(f"condition {cond!r}: the reverberation time must be in (0, {MAX_RT60:g}] seconds")
    return kind, v


def apply_condition(
    audio: torch.Tensor,
    cond: str,
    seed: int,
    sample_rate: int = 24000,
    babble_pool: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The input audio ``(T,)`` as heard under ``cond`` (deterministic for a seed)."""
    kind, value = parse_condition(cond)
    if kind == "clean":
        return audio
    if kind == "pitch":
        return pitch_shift(audio, value, sample_rate)
    if kind == "speed":
        return speed_perturb(audio, value, sample_rate)
    rng = np.random.default_rng(seed)
    if kind == "reverb":
        return add_reverb(audio, sample_rate, value, rng)
    if kind == "babble" and not babble_pool:
        babble_pool = synthetic_babble_pool(sample_rate)
    noise = make_noise(
        kind, audio.shape[0], rng, utterances=list(babble_pool) if kind == "babble" else None, sample_rate=sample_rate
    )
    return mix_at_snr(audio, noise, value, rng=rng)


def condition_seed(entry_id: str, cond: str, seed: int) -> int:
    return random.Random(f"{seed}/{entry_id}/{cond}").getrandbits(62)


@dataclasses.dataclass
class HeldoutResult:
    condition: str
    n: int
    cer: float
    wer: float
    mel_l1: float | None = None
    examples: list[dict] = dataclasses.field(default_factory=list)
    #: every transcript, in the entries' order (for per-item scores; not kept in the fine-tune's eval.json)
    hyps: list[str] = dataclasses.field(default_factory=list, repr=False)


@torch.no_grad()
def evaluate_asr(
    model,
    entries: Sequence[ManifestEntry],
    audios: Sequence[torch.Tensor],
    cond: str,
    *,
    seed: int = 0,
    batch_size: int = 8,
    max_new_positions: int = 200,
    examples: int = 4,
) -> HeldoutResult:
    """Greedy A→T transcription of every entry's audio under ``cond``; CER/WER against its text, and the first
    ``examples`` transcripts (``{id, ref, hyp}``)."""
    model.eval()
    hyps, refs, kept = [], [], []
    for start in range(0, len(entries), batch_size):
        chunk = list(zip(entries[start : start + batch_size], audios[start : start + batch_size]))
        prompts = [
            Sample("A2T", prompt_audio=model.prepare_audio(apply_condition(a, cond, condition_seed(e.id, cond, seed))))
            for e, a in chunk
        ]
        out = model.generate(
            prompts, text_temperature=0.0, speech_temperature=0.0, max_new_positions=max_new_positions, seed=seed
        )
        for (e, _), g in zip(chunk, out):
            hyps.append(g.text)
            refs.append(e.text)
            if len(kept) < examples:
                kept.append({"id": e.id, "ref": e.text, "hyp": g.text})
    return HeldoutResult(cond, len(refs), cer(refs, hyps), wer(refs, hyps), examples=kept, hyps=hyps)


@torch.no_grad()
def evaluate_tts(
    model,
    entries: Sequence[ManifestEntry],
    audios: Sequence[torch.Tensor],
    *,
    seed: int = 0,
    batch_size: int = 8,
    max_new_positions: int = 400,
    outputs: list | None = None,
) -> float:
    """Greedy T→A on every entry's text; mean log-mel distance to ``audios`` (the references). The generated
    items are appended to ``outputs`` when it is given."""
    model.eval()
    dists = []
    for start in range(0, len(entries), batch_size):
        chunk = list(zip(entries[start : start + batch_size], audios[start : start + batch_size]))
        prompts = [Sample("T2A", prompt_text=e.text) for e, _ in chunk]
        out = model.generate(
            prompts, text_temperature=0.0, speech_temperature=0.0, max_new_positions=max_new_positions, seed=seed
        )
        if outputs is not None:
            outputs.extend(out)
        for (_, a), g in zip(chunk, out):
            ref = model.speech_tokenizer.mel(a)
            if g.mel is None or g.mel.shape[-1] == 0:
                dists.append(mel_distance(torch.full_like(ref, float("-inf")), ref))  # silence vs the reference
            else:
                dists.append(mel_distance(g.mel, ref))
    return float(np.mean(dists)) if dists else float("nan")


def evaluate_heldout(
    model,
    manifests: dict[str, str],
    conditions: Sequence[str],
    *,
    max_items: int = 16,
    tts: bool = True,
    seed: int = 0,
    on_part: Callable[[str, float], None] | None = None,
    wav_dir: Path | None = None,
    sample_wavs: int = 0,
) -> dict:
    """Every manifest × every condition: ASR CER/WER; and clean TTS mel distance per manifest.

    With ``wav_dir``, the first ``sample_wavs`` items of each manifest are kept for listening
    (:class:`~flow_omni.eval.samples.SampleLog`): the input as heard under each condition with its
    transcript, and the TTS speech (Griffin-Lim).

    ``on_part(what, done)`` is called before each part (one manifest under one condition, or its TTS)
    with what it scores and the share of the parts done, so that a caller can say how far it is.

    Returns ``{manifest_name: {"asr": {cond: HeldoutResult as dict}, "tts_mel_l1": float | None}}``.
    """
    for c in conditions:
        parse_condition(c)
    parts, done = len(manifests) * (len(conditions) + int(tts)), 0

    def start(name: str, what: str) -> None:
        nonlocal done
        if on_part is not None:
            on_part(f"{name}: {what} ({done + 1}/{parts})", done / parts)
        done += 1

    results: dict = {}
    sr = model.config.speech.mel.sample_rate
    log = SampleLog(wav_dir, sr) if wav_dir is not None and sample_wavs else None
    for name, path in manifests.items():
        entries = read_manifest(path)[:max_items]
        audios = [load_audio(e.audio) for e in entries]
        keep = sample_wavs if log is not None else 0
        asr = {}
        for c in conditions:
            start(name, f"ASR {c}")
            res = evaluate_asr(model, entries, audios, c, seed=seed, examples=max(4, keep))
            asr[c] = {k: v for k, v in dataclasses.asdict(res).items() if k != "hyps"}
            asr[c]["examples"] = asr[c]["examples"][:4]  # eval.json keeps four, as before
            for e, a, ex in zip(entries[:keep], audios, res.examples):
                wav = log.save(
                    f"{name}_input_{c.replace('@', '_')}_{e.id}.wav",
                    apply_condition(a, c, condition_seed(e.id, c, seed), sr),
                )
                log.add("asr", c, e.id, e.text, data=name, input=wav, text=ex["hyp"])
        mel_l1 = None
        if tts:
            start(name, "TTS")
            outputs: list = []
            # TTS is scored against the output voice (what T2A trains on) when the corpus has one.
            mel_l1 = evaluate_tts(
                model, entries, [load_audio(e.t2a_audio) for e in entries], seed=seed, outputs=outputs
            )
            for e, g in zip(entries[:keep], outputs):
                record = log.add("tts", "clean", e.id, e.text, data=name)
                if g.mel is not None and g.mel.shape[-1]:
                    record["output"] = log.save(f"{name}_tts_output_{e.id}.wav", _griffin_lim(g.mel))
        results[name] = {"asr": asr, "tts_mel_l1": mel_l1, "n": len(entries)}
    if log is not None:
        log.write()
    return results


def _griffin_lim(mel: torch.Tensor) -> torch.Tensor:
    """Audio of a generated mel for listening (the fine-tune report has no Vocos checkpoint to hand)."""
    return load_vocoder(None).decode(mel)


def heldout_rows(results: dict, before: dict | None = None) -> list[dict]:
    """:func:`evaluate_heldout`'s result as long-format rows ``{data, task, condition, metric, value, n}`` (the
    model card's evaluation table); with ``before`` (the same evaluation before training) each row also holds
    ``before``."""
    rows = []
    for name, res in results.items():
        old = (before or {}).get(name, {})
        for cond, r in res["asr"].items():
            for metric in ("cer", "wer"):
                row = {"data": name, "task": "asr", "condition": cond, "metric": metric, "value": r[metric]}
                was = old.get("asr", {}).get(cond, {}).get(metric)
                rows.append({**row, "n": r["n"], **({} if was is None else {"before": was})})
        if res.get("tts_mel_l1") is not None:
            row = {"data": name, "task": "tts", "condition": "clean", "metric": "mel_l1", "value": res["tts_mel_l1"]}
            was = old.get("tts_mel_l1")
            rows.append({**row, "n": res["n"], **({} if was is None else {"before": was})})
    return rows
