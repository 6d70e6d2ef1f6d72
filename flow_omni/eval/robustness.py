"""Scoring for the robustness benchmark: one model's ASR, TTS and spoken-QA metrics under listening conditions.

:func:`evaluate_model` scores one model (a benchmark run, or a user's checkpoint) on any manifests:

* **ASR** (input robustness): the model's own A→T on the test utterances, clean, with white / pink /
  babble noise at each SNR, pitch and rate changes, and voices unseen in training → CER, WER;
* **TTS** (output quality, clean text in): greedy T→A → log-mel distance and mel-cepstral distortion
  against the reference recording, and the model's own ASR of what it said (CER);
* **spoken QA** (speech in, text + speech out): A→A on the QA test questions under the same
  conditions → answer accuracy of the text stream.

Rows are long-format ``{variant, seed, task, condition, metric, value, n}``; :func:`aggregate` gives
mean ± std over seeds. The benchmark that trains the variants and runs all this is
:mod:`flow_omni.bench.robustness`.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from flow_omni.audio.io import load_audio
from flow_omni.data.manifest import ManifestEntry
from flow_omni.data.texts import score_answer
from flow_omni.eval.audio_metrics import mel_cepstral_distortion, mel_distance, qa_accuracy
from flow_omni.eval.heldout import apply_condition, condition_seed, evaluate_asr
from flow_omni.eval.samples import SampleLog
from flow_omni.eval.text_metrics import cer, item_errors, mean_reference_length, wer
from flow_omni.layout import Sample
from flow_omni.vocoder import load_vocoder

TASKS = ("asr", "tts", "qa")
UNSEEN = "unseen_voices"
#: The name suffix of a variant after the noisy-domain fine-tune (``continuous+noisy_ft``).
FINETUNED = "+noisy_ft"


# ----------------------------------------------------------------------------------- scoring
def metric_rows(
    variant: str,
    seed: int,
    task: str,
    condition: str,
    metrics: dict[str, float],
    n: int,
    items: Mapping[str, Sequence[float | None]] | None = None,
) -> list[dict]:
    """One long-format row per metric of one (variant, seed, task, condition), measured on ``n`` items.

    ``items``: per metric, each test item's value in the test set's order (None for an item the metric
    does not cover, e.g. the speech of a prompt left silent), kept in the row as ``items`` so that two
    variants can be compared item by item. Their mean is the metric when every item is covered; error
    rates of the model's speech are on the whole test set's scale (:func:`item_errors`' ``mean_length``),
    so that they compare between models that left different prompts silent."""
    rows = []
    for k, v in metrics.items():
        row = {"variant": variant, "seed": seed, "task": task, "condition": condition, "metric": k, "value": float(v)}
        row["n"] = n
        if items is not None and k in items:
            row["items"] = [None if x is None else round(float(x), 6) for x in items[k]]
        rows.append(row)
    return rows


def _generate(model, prompts: list[Sample], max_new: int, batch_size: int = 8, generation: Mapping | None = None):
    """Greedy text and speech (temperature 0), with ``generation``'s GenerationConfig fields on top."""
    settings = {"text_temperature": 0.0, "speech_temperature": 0.0, "max_new_positions": max_new, "seed": 0}
    settings.update(generation or {})
    out = []
    for i in range(0, len(prompts), batch_size):
        out += model.generate(prompts[i : i + batch_size], **settings)
    return out


def _at(positions: Sequence[int], values: Sequence[float], n: int) -> list[float | None]:
    """``values`` of the items at ``positions`` as a list over all ``n`` items, None elsewhere."""
    out: list[float | None] = [None] * n
    for i, v in zip(positions, values, strict=True):
        out[i] = v
    return out


def token_held_reference(model, ref: torch.Tensor) -> torch.Tensor | None:
    """The raw log-mel ``ref`` ``(n_mels, F)`` as the model's speech tokens can hold it (a codebook's round trip,
    :meth:`~flow_omni.models.speech_head.SpeechHead.represent`), or None when the model speaks the tokens
    themselves: what a perfect predictor of its tokens would say."""
    tok = model.speech_tokenizer
    tokens = tok.encode_mel(ref)
    held = model.speech.represent(tokens.to(model.device)).to(tokens.device)  # a codebook lives with the model
    return None if torch.equal(held, tokens) else tok.decode(held, num_frames=ref.shape[-1])


def _within(audio: torch.Tensor, seconds: float | None, sr: int) -> torch.Tensor:
    """The first ``seconds`` of ``audio`` (a runaway output must still fit the encoder's window)."""
    return audio if seconds is None else audio[: int(seconds * sr)]


@torch.no_grad()
def evaluate_model(
    model,
    test: Sequence[ManifestEntry],
    qa: Sequence[ManifestEntry],
    conditions: Sequence[str],
    *,
    unseen: Sequence[ManifestEntry] = (),
    tasks: Sequence[str] = TASKS,
    max_new_positions: int = 300,
    label: tuple[str, int] = ("model", 0),
    wav_dir: Path | None = None,
    sample_wavs: int = 0,
    vocoder=None,
    external_asr=None,
    speech_answer_conditions: Sequence[str] = ("clean",),
    progress: bool = False,
    ceiling_cache: dict[str, str] | None = None,
    generation: Mapping | None = None,
) -> list[dict]:
    """Score one model; returns long-format rows ``{variant, seed, task, condition, metric, value, n}``.

    With ``wav_dir``, the first ``sample_wavs`` items of every task and condition are kept for listening
    (:class:`~flow_omni.eval.samples.SampleLog`): the inputs as heard, the speech the model produced (TTS
    outputs, QA answers) vocoded with ``vocoder`` (a callable mel ``(n_mels, F)`` → audio; Griffin-Lim
    when None; the same vocoder for every variant), and ``samples.json`` with what was said in each.

    ``ceiling_cache``: a dict the caller keeps between calls with the same ``vocoder`` and
    ``external_asr``; the listener's transcript of each resynthesised reference (the TTS ceiling) is
    stored in it by reference file, so scoring many checkpoints transcribes the references once.

    TTS ceilings, with ``external_asr``: ``whisper_wer_ceiling`` hears the reference resynthesised;
    for a model that speaks codes, ``whisper_wer_tokens`` hears it as the codes can hold it
    (:func:`token_held_reference`), the ceiling of a perfect predictor of that model's tokens (cached
    by reference file and the held log-mel's digest).

    ``generation``: GenerationConfig fields on top of greedy decoding for the T→A and QA generations
    and the read-back of the model's speech (e.g. the flow head's ``solver``, ``steps`` or
    ``cfg_scale``), to score one model under other sampling settings; ASR decodes with the defaults.
    """
    model.eval()
    if (external_asr is not None or (wav_dir is not None and sample_wavs)) and vocoder is None:
        vocoder = load_vocoder(None).decode
    variant, seed = label
    rows: list[dict] = []
    sr = model.config.speech.mel.sample_rate
    test_audio = [load_audio(e.audio) for e in test]
    keep = sample_wavs if wav_dir is not None else 0
    log = SampleLog(wav_dir, sr, seed=seed) if keep else None
    qa_audio = [load_audio(e.audio) for e in qa]
    bar = tqdm(
        total=len(conditions) * (("asr" in tasks) + ("qa" in tasks)) + ("tts" in tasks) + bool(unseen),
        desc=f"eval {variant}/{seed}",
        disable=not progress,
        leave=False,
    )

    def heard(entries, audios, cond):
        return [apply_condition(a, cond, condition_seed(e.id, cond, 0), sr) for e, a in zip(entries, audios)]

    def asr(entries, audios, cond, name):
        res = evaluate_asr(model, entries, audios, cond, max_new_positions=max_new_positions, examples=keep)
        texts = [e.text for e in entries]
        items = {"cer": item_errors(texts, res.hyps), "wer": item_errors(texts, res.hyps, "word")}
        rows.extend(metric_rows(variant, seed, "asr", name, {"cer": res.cer, "wer": res.wer}, res.n, items))
        if log is not None:
            for e, a, ex in zip(entries[:keep], heard(entries[:keep], audios[:keep], cond), res.examples):
                wav = log.save(f"input_{name.replace('@', '_')}_{e.id}.wav", a)
                log.add("asr", name, e.id, e.text, input=wav, text=ex["hyp"])

    if "asr" in tasks and test:
        for cond in conditions:
            asr(test, test_audio, cond, cond)
            bar.update()
        if unseen:
            asr(unseen, [load_audio(e.audio) for e in unseen], "clean", UNSEEN)
            bar.update()
    if "tts" in tasks and test:
        if vocoder is None:  # the model's own ASR of a Whisper-encoder model listens to audio
            vocoder = load_vocoder(None).decode
        prompts = [Sample("T2A", prompt_text=e.text) for e in test]
        out = _generate(model, prompts, max_new_positions, generation=generation)
        dists, mcds, spoke, said, refs, heard_text, heard_ref, heard_held = [], [], 0, [], [], [], [], []
        spoken: list[int] = []  # positions in `test` of the prompts that produced speech
        kept: dict[int, dict] = {}  # position in `said` -> the sample record its own ASR goes into
        # The reference is the sentence in the output voice when the corpus has one (what T2A trains on).
        for i, (e, g) in enumerate(zip(test, out)):
            ref = model.speech_tokenizer.mel(load_audio(e.t2a_audio))
            # The first items whatever they hold, so that every variant's page shows the same sentences.
            record = log.add("tts", "clean", e.id, e.text) if log is not None and i < keep else None
            if external_asr is not None:  # the ceiling: the reference itself through the same vocoder
                cache = {} if ceiling_cache is None else ceiling_cache
                if e.t2a_audio not in cache:
                    cache[e.t2a_audio] = external_asr.transcribe(vocoder(ref), sr)
                heard_ref.append(cache[e.t2a_audio])
                held = token_held_reference(model, ref)
                if held is not None:
                    key = f"{e.t2a_audio}#tokens:{hashlib.sha1(held.cpu().numpy().tobytes()).hexdigest()}"
                    if key not in cache:
                        cache[key] = external_asr.transcribe(vocoder(held), sr)
                    heard_held.append(cache[key])
            if g.mel is None or g.mel.shape[-1] == 0:
                dists.append(mel_distance(torch.full_like(ref, -math.inf), ref))  # silence vs the reference
                continue
            spoke += 1
            spoken.append(i)
            dists.append(mel_distance(g.mel, ref))
            mcds.append(mel_cepstral_distortion(g.mel, ref, align="dtw"))
            if external_asr is not None:  # intelligibility to a listener that never saw our data
                heard_text.append((e.text, external_asr.transcribe(vocoder(g.mel), sr)))
            if record is not None:
                record["output"] = log.save(f"tts_output_{e.id}.wav", vocoder(g.mel))
                if external_asr is not None:
                    record["heard"] = heard_text[-1][1]
                kept[len(said)] = record
            # Intelligibility by the model's own ASR: a conv encoder reads the generated tokens directly,
            # a Whisper encoder hears them vocoded.
            said.append(
                Sample(
                    "A2T",
                    prompt_audio=g.speech_tokens
                    if model.config.encoder.kind == "conv"
                    else model.prepare_audio(_within(vocoder(g.mel), model.encoder.max_seconds, sr)),
                )
            )
            refs.append(e.text)
        metrics = {"mel_l1": float(np.mean(dists)), "spoke": spoke / len(test)}
        items = {"mel_l1": dists}
        if mcds:
            metrics["mcd_db"] = float(np.mean(mcds))
        if heard_text:
            metrics["whisper_wer"] = wer([r for r, _ in heard_text], [h for _, h in heard_text])
            # On the whole test set's scale, so that models that spoke different sentences compare.
            scale = mean_reference_length([e.text for e in test], "word")
            heard_items = item_errors([r for r, _ in heard_text], [h for _, h in heard_text], "word", scale)
            items["whisper_wer"] = _at(spoken, heard_items, len(test))
        if heard_ref:
            metrics["whisper_wer_ceiling"] = wer([e.text for e in test], heard_ref)
        if heard_held:
            metrics["whisper_wer_tokens"] = wer([e.text for e in test], heard_held)
        if said:
            hyps = [g.text for g in _generate(model, said, max_new_positions, generation=generation)]
            metrics["self_asr_cer"] = cer(refs, hyps)
            scale = mean_reference_length([e.text for e in test])
            items["self_asr_cer"] = _at(spoken, item_errors(refs, hyps, mean_length=scale), len(test))
            for j, record in kept.items():
                record["own"] = hyps[j]
        rows.extend(metric_rows(variant, seed, "tts", "clean", metrics, len(test), items))
        bar.update()
    if "qa" in tasks and qa:
        for cond in conditions:
            noisy = heard(qa, qa_audio, cond)
            out = _generate(
                model,
                [Sample("A2A", prompt_audio=model.prepare_audio(a)) for a in noisy],
                max_new_positions,
                generation=generation,
            )
            refs = [e.answer_text for e in qa]
            metrics = {"accuracy": qa_accuracy([g.text for g in out], refs)}
            items = {"accuracy": [float(score_answer(g.text, r)) for g, r in zip(out, refs)]}
            if external_asr is not None and cond in speech_answer_conditions:
                # The spoken answer, as a listener hears it: vocoded, transcribed by Whisper, then scored.
                # A silent answer counts as wrong.
                heard_answers = [
                    external_asr.transcribe(vocoder(g.mel), sr) if g.mel is not None and g.mel.shape[-1] else ""
                    for g in out
                ]
                metrics["speech_accuracy"] = qa_accuracy(heard_answers, refs)
                items["speech_accuracy"] = [float(score_answer(h, r)) for h, r in zip(heard_answers, refs)]
            rows.extend(metric_rows(variant, seed, "qa", cond, metrics, len(qa), items))
            if log is not None:
                name = cond.replace("@", "_")
                for i, (e, a, g) in enumerate(list(zip(qa, noisy, out))[:keep]):
                    record = log.add("qa", cond, e.id, e.answer_text, prompt=e.text, text=g.text)
                    record["input"] = log.save(f"qa_question_{name}_{e.id}.wav", a)
                    if g.mel is not None and g.mel.shape[-1]:
                        record["output"] = log.save(f"qa_answer_{name}_{e.id}.wav", vocoder(g.mel))
                    if external_asr is not None and cond in speech_answer_conditions:
                        record["heard"] = heard_answers[i]
            bar.update()
    bar.close()
    if log is not None:
        log.write()
    return rows


# ------------------------------------------------------------------------------ aggregation
def aggregate(rows: Sequence[dict], items: bool = True) -> list[dict]:
    """Mean ± std over seeds for every (variant, task, condition, metric), with each seed's value
    (``by_seed``: seed → value), which paired comparisons need; with ``items``, also each seed's values
    per test item where the rows hold them (``items_by_seed``: seed → list, see :func:`metric_rows`)."""
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    per_item: dict[tuple, dict[int, list]] = defaultdict(dict)
    for r in rows:
        key = (r["variant"], r["task"], r["condition"], r["metric"])
        cell = groups[key]
        if r["seed"] in cell:
            raise ValueError(
                f"two rows for seed {r['seed']} of {r['variant']} {r['task']} {r['condition']} {r['metric']}"
            )
        cell[r["seed"]] = r["value"]
        if items and r.get("items") is not None:
            per_item[key][r["seed"]] = r["items"]
    out = []
    for key, by_seed in groups.items():
        arr = np.asarray(list(by_seed.values()), dtype=float)
        v, t, c, m = key
        cell = {
            "variant": v,
            "task": t,
            "condition": c,
            "metric": m,
            "mean": float(arr.mean()),
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "seeds": len(arr),
            "by_seed": by_seed,
        }
        if key in per_item:
            cell["items_by_seed"] = per_item[key]
        out.append(cell)
    return out
