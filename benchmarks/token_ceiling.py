"""What can a kind of speech token hold? The test references round-tripped through each quantiser, heard.

A discrete model speaks codes, so even a perfect predictor of its codes says the reference only as
well as the codebook can hold it. For each ``--quantizer`` this fits the speech head on training speech
as training does (the token statistics on ``--stats-files`` files of every kind, the codebooks on
``--max-files`` files, in normalised tokens), replaces each test
reference's tokens by what the head can speak (:meth:`~flow_omni.models.speech_head.SpeechHead.represent`),
decodes them to a log-mel and scores it as ``benchmarks/tts_teacher_forcing.py`` scores speech: mel L1 to
the reference, and Whisper tiny.en's WER over all items and the median of the per-item WERs, through the
same vocoder (Griffin-Lim by default). ``continuous`` is the reference itself through the same path.

``--fit-on`` chooses the codebooks' training files (``FlowOmniDataModule.speech_mels``): ``all`` (the
audio files of the training entries in manifest order, input voices and spoken targets; with
``--max-files 200`` this is how training fitted them before 410c20b) or ``targets`` (only the
speech a model is trained to say: T→A targets and spoken answers, as training does now).

    python benchmarks/token_ceiling.py --corpus data/learn --quantizer kmeans:256 kmeans:1024 rvq:256x4
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from record import write_result  # benchmarks/record.py, beside this script

from flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.audio.io import load_audio
from flow_omni.data.dataset import DataConfig
from flow_omni.data.manifest import read_manifest
from flow_omni.eval.asr import WhisperASR
from flow_omni.eval.audio_metrics import mel_distance
from flow_omni.eval.robustness import token_held_reference
from flow_omni.eval.text_metrics import wer
from flow_omni.training.config import TrainConfig
from flow_omni.training.datamodule import FlowOmniDataModule
from flow_omni.vocoder import load_vocoder


def quantizer_config(spec: str) -> dict:
    """``continuous``, ``kmeans:K`` or ``rvq:KxLEVELS`` → FlowOmniConfig keyword arguments."""
    if spec == "continuous":
        return {}
    kind, _, size = spec.partition(":")
    try:
        if kind == "kmeans":
            return dict(tokens="kmeans", quantizer={"codebook_size": int(size)})
        if kind == "rvq":
            k, levels = size.split("x")
            return dict(tokens="rvq", quantizer={"codebook_size": int(k), "num_levels": int(levels)})
    except ValueError:
        pass
    raise SystemExit(f"--quantizer {spec!r}: expected continuous, kmeans:K or rvq:KxLEVELS (e.g. rvq:256x4)")


def training_data(corpus: str) -> FlowOmniDataModule:
    """The training entries as training reads them, for :meth:`FlowOmniDataModule.speech_mels`."""
    data = FlowOmniDataModule(FlowOmni(FlowOmniConfig.preset("tiny")), DataConfig(train=[f"{corpus}/train.jsonl"]))
    data.setup("fit")
    return data


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="a flow-omni corpus folder (train.jsonl, test.jsonl)")
    p.add_argument("--quantizer", nargs="+", default=["continuous", "kmeans:256", "kmeans:1024", "rvq:256x4"])
    p.add_argument("--fit-on", nargs="+", choices=("all", "targets"), default=["all", "targets"])
    p.add_argument(
        "--max-files", type=int, default=TrainConfig().codebook_max_files, help="files to fit the codebooks on"
    )
    p.add_argument(
        "--stats-files", type=int, default=TrainConfig().stats_max_files, help="files to fit the statistics on"
    )
    p.add_argument("--items", type=int, default=24, help="test sentences")
    p.add_argument("--r", type=int, default=4, help="frames per token")
    p.add_argument("--vocoder", default=None, help="mel → audio for the listener (default Griffin-Lim)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    load = os.getloadavg()
    torch.set_num_threads(args.threads)
    specs = [(q, quantizer_config(q)) for q in args.quantizer]
    test = [e for e in read_manifest(f"{args.corpus}/test.jsonl") if not e.answer_text][: args.items]
    texts = [e.text for e in test]
    vocoder = load_vocoder(args.vocoder).decode
    listener = WhisperASR(cpu_threads=args.threads)
    rows = []
    print("| tokens | fitted on | mel L1 | Whisper WER | median item WER | seconds |\n|---|---|---|---|---|---|")
    data = training_data(args.corpus)
    stats_mels = data.speech_mels(args.stats_files)  # as training fits them: every kind of file
    for fit_on in args.fit_on:
        mels = data.speech_mels(args.max_files, spoken_only=fit_on == "targets")
        for spec, kw in specs:
            t0 = time.perf_counter()
            torch.manual_seed(0)
            model = FlowOmni(FlowOmniConfig.preset("tiny", r=args.r, **kw))
            tok = model.speech_tokenizer
            model.fit_speech_stats(mels=stats_mels)
            if model.speech.needs_fit:
                model.fit_speech_head([tok.encode_mel(m) for m in mels])
            refs = [tok.mel(load_audio(e.t2a_audio)) for e in test]
            with torch.no_grad():
                held = [token_held_reference(model, r) for r in refs]
            held = [r if h is None else h for h, r in zip(held, refs)]  # None: the tokens hold the reference
            heard = [listener.transcribe(vocoder(m), model.config.speech.mel.sample_rate) for m in held]
            row = dict(
                tokens=spec,
                fit_on=fit_on,
                files=len(mels),
                mel_l1=statistics.mean(mel_distance(m, r) for m, r in zip(held, refs)),
                whisper_wer=wer(texts, heard),
                median_item_wer=statistics.median(wer([t], [h]) for t, h in zip(texts, heard)),
                transcripts=heard,
                seconds=time.perf_counter() - t0,
            )
            rows.append(row)
            print(
                f"| {spec} | {fit_on} ({len(mels)} files) | {row['mel_l1']:.3f} | {row['whisper_wer']:.3f} "
                f"| {row['median_item_wer']:.3f} | {row['seconds']:.0f} |",
                flush=True,
            )
    if args.json is not None:
        write_result(args.json, "token_ceiling", args, load, texts=texts, rows=rows)


if __name__ == "__main__":
    main()
