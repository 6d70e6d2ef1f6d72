"""Lightning training: loss falls, exact resume after a kill, DDP == one process, LoRA, NaN guard.

Data are 8 synthetic utterances (formant synthesiser) with answers, written as WAV + manifest;
the model is the tiny preset. Runs are a dozen steps on one thread.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from browser import check_page
from conftest import write_tiny_corpus

from flow_omni import FlowOmni, Sample
from flow_omni.audio.io import load_audio
from flow_omni.audio.synth import synth_corpus
from flow_omni.config import parse_overrides
from flow_omni.data.manifest import ManifestEntry, read_manifest, write_manifest
from flow_omni.data.report import EmptyBatch
from flow_omni.data.validate import validate_manifest
from flow_omni.errors import FlowOmniError
from flow_omni.models.lora import adapter_state_dict, load_adapter, merge_lora
from flow_omni.training.config import TrainConfig
from flow_omni.training.module import NonFiniteLossError, read_loss_log
from flow_omni.training.train import build_model, train

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("data"))


def config(data_dir: Path, out: Path, **overrides) -> TrainConfig:
    base = {
        "out_dir": str(out),
        "seed": 0,
        "threads": 1,
        "progress": False,
        "loggers": ["csv"],
        "model": {"preset": "tiny", "r": 4},
        "data": {"train": [str(data_dir / "train.jsonl")], "batch_size": 4},
        "optim": {"lr": 2e-3, "warmup_steps": 4},
        "max_steps": 12,
        "checkpoint_every_steps": 4,
        "log_every_steps": 1,
        "val_every_steps": 6,
    }
    for key, value in overrides.items():
        node = base
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return TrainConfig.from_dict(base)


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def run_cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """An uninterrupted 12-step run (with validation), the reference for resume and DDP."""
    out = tmp_path_factory.mktemp("straight")
    cfg = config(data_dir, out, **{"data.valid": [str(data_dir / "valid.jsonl")]})
    return cfg, train(cfg)


def test_training_writes_everything_and_loss_falls(straight):
    cfg, res = straight
    assert res.steps == 12 and len(res.history) == 12
    first = sum(h["loss"] for h in res.history[:3]) / 3
    last = sum(h["loss"] for h in res.history[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    for term in ("text", "state", "flow"):
        assert all(term in h for h in res.history)
    metrics = (res.out_dir / "logs" / "csv" / "metrics.csv").read_text()
    for col in ("train/loss", "train/text", "train/state", "train/flow", "val/loss", "train/grad_norm"):
        assert col in metrics
    assert res.last_checkpoint and res.last_checkpoint.is_file()
    assert TrainConfig.load(res.out_dir / "config.yaml") == cfg
    model = FlowOmni.from_pretrained(res.model_dir)
    assert model.config.speech.stats is not None  # token statistics were fitted and exported
    card = (res.model_dir / "README.md").read_text()
    assert "12 steps of 4 items, learning rate 0.002, seed 0; trained from the weights its config builds" in card
    assert f"8 entries from `{cfg.data.train[0]}`" in card
    assert re.search(r"\*\*Wall time of training:\*\* \d+\.\d s\.", card), card  # a dozen steps take seconds
    # 12 steps do not teach it to speak yet; generation must still run end to end on the export.
    g = model.generate([Sample("T2A", prompt_text="seven")], max_new_positions=40)[0]
    assert g.positions > 0 and len(g.text_ids) > 0


def test_resume_after_kill_equals_uninterrupted(data_dir, straight, tmp_path):
    """SIGKILL a CLI run after its first checkpoint, resume it, and compare with the straight run."""
    cfg, ref = straight
    out = tmp_path / "killed"
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(cfg.replace(out_dir=str(out)).to_yaml())
    proc = run_cli([str(BIN / "flow-omni"), "train", "--config", str(cfg_path), "--no-progress"], tmp_path)
    ckpt_dir = out / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (ckpt_dir / "last.ckpt").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    killed_at, timed = killed["global_step"], killed["callbacks"]["TrainClock"]["seconds"]
    assert 0 < killed_at < cfg.max_steps and timed > 0
    proc = run_cli([str(BIN / "flow-omni"), "train", "--config", str(cfg_path), "--resume", "--no-progress"], tmp_path)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert max_diff(FlowOmni.from_pretrained(out / "model"), FlowOmni.from_pretrained(ref.model_dir)) < 1e-6
    from flow_omni.training.module import read_loss_log

    resumed = read_loss_log(out / "train_log.jsonl")
    assert [h["step"] for h in resumed] == list(range(cfg.max_steps))
    for a, b in zip(resumed, ref.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    card = (out / "model" / "README.md").read_text()
    assert "12 steps of 4 items" in card  # the steps of both parts
    # The wall time of both parts: the checkpoint's, then the resumed process's own.
    wall = re.search(r"\*\*Wall time of training:\*\* (?:(\d+) min )?([\d.]+) s\.", card)
    assert wall, card
    assert 60 * int(wall[1] or 0) + float(wall[2]) > timed


def test_the_training_time_of_a_resumed_run_counts_both_parts(data_dir, tmp_path):
    """A resumed run's ``run_seconds`` (and model card) add its own time in fit to the time its
    checkpoint kept; a checkpoint written before the time was kept resumes with the time not known."""
    first = train(config(data_dir, tmp_path / "a", max_steps=4))
    assert first.run_seconds is not None and first.run_seconds > 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    old = tmp_path / "b" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(old, weights_only=True)
    kept = ckpt["callbacks"].pop("TrainClock")["seconds"]
    torch.save(ckpt, old)
    assert 0 < kept <= first.run_seconds
    resumed = train(config(data_dir, tmp_path / "a", max_steps=6), resume="last")
    assert resumed.steps == 6 and resumed.seconds_before_resume == pytest.approx(kept)
    assert resumed.run_seconds == pytest.approx(kept + resumed.seconds)
    unknown = train(config(data_dir, tmp_path / "b", max_steps=6), resume="last")
    assert unknown.steps == 6 and unknown.seconds_before_resume is None and unknown.run_seconds is None
    assert "not known (the run was resumed" in (tmp_path / "b" / "model" / "README.md").read_text()


@pytest.mark.parametrize("unreadable", [False, True], ids=["clean", "unreadable_files"])
def test_ddp_two_processes_match_one(data_dir, tmp_path, unreadable):
    """torchrun with 2 CPU processes (gloo) and global batch 4 == one process with batch 4.

    With two files that fail when drawn, and a global batch of 2 (one item per rank), a rank whose
    item is skipped still takes part in the step (else the other would wait forever), and the
    result still equals one process that trained on the items left.
    """
    changes = {"max_steps": 6}
    if unreadable:
        bad = [ManifestEntry(f"bad{i}", str(damaged_flac(tmp_path / f"bad{i}.flac", i)), "broken") for i in (1, 2)]
        m = manifest_around(tmp_path / "m.jsonl", data_dir, last=bad)
        changes.update({"stats_max_files": 4, "data.train": [str(m)], "data.batch_size": 2})
    one = train(config(data_dir, tmp_path / "one", **changes))
    yaml_path = tmp_path / "ddp.yaml"
    yaml_path.write_text(config(data_dir, tmp_path / "two", devices=2, strategy="ddp", **changes).to_yaml())
    proc = run_cli(
        [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            "2",
            "--no-python",
            str(BIN / "flow-omni"),
            "train",
            "--config",
            str(yaml_path),
            "--no-progress",
        ],
        tmp_path,
    )
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert "trained 6 steps" in log
    diff = max_diff(FlowOmni.from_pretrained(tmp_path / "two" / "model"), FlowOmni.from_pretrained(one.model_dir))
    assert diff < 1e-4, diff  # float reduction order only (measured ~2e-5 after 12 steps)
    reported = sorted((tmp_path / "two" / "data_report.txt").read_text().splitlines())  # each rank adds its own
    assert reported == sorted(one.data_report) and len(reported) == (2 if unreadable else 0)


def test_lora_changes_only_the_adapter(data_dir, tmp_path):
    cfg = config(
        data_dir, tmp_path / "lora", max_steps=6, trainable=[], lora={"r": 4, "alpha": 8}, **{"optim.lr": 5e-3}
    )
    res = train(cfg)
    assert res.adapter_dir is not None and (res.adapter_dir / "model.safetensors").is_file()
    adapter_bytes = (res.adapter_dir / "model.safetensors").stat().st_size
    assert adapter_bytes < 0.1 * (res.model_dir / "model.safetensors").stat().st_size

    # The untrained model, rebuilt exactly as train() built it, plus the adapter, merged ...
    L.seed_everything(cfg.seed, verbose=False)
    base = build_model(cfg)
    from flow_omni.training.datamodule import FlowOmniDataModule

    dm = FlowOmniDataModule(base, cfg.data, seed=cfg.seed)
    dm.setup()
    base.fit_speech_stats(mels=dm.speech_mels(cfg.stats_max_files))
    untouched = {k: v.clone() for k, v in base.state_dict().items()}
    load_adapter(base, res.adapter_dir)
    adapter = adapter_state_dict(base)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0: it learned
    merge_lora(base)
    # ... equals the exported model: so nothing but the adapter changed during training.
    assert max_diff(base, FlowOmni.from_pretrained(res.model_dir)) < 1e-6
    changed = [k for k, v in base.state_dict().items() if not torch.equal(v, untouched[k])]
    assert changed and all(".self_attn." in k or ".mlp." in k for k in changed)  # only LoRA-targeted layers


def test_special_token_rows_train_alone_in_a_frozen_backbone(data_dir, tmp_path):
    """``trainable: [.., special_tokens]`` (stage 1): the embedding / LM-head rows of <eot>, <tpad> and the
    task tokens learn; every other row, and every other backbone weight, stays bit for bit (no weight decay
    on them either)."""
    cfg = config(data_dir, tmp_path, max_steps=4, trainable=["heads", "special_tokens"], **{"optim.lr": 5e-3})
    L.seed_everything(cfg.seed, verbose=False)  # as train() does: the same initial weights as the run's
    before = build_model(cfg).backbone.state_dict()
    res = train(cfg)
    model = FlowOmni.from_pretrained(res.model_dir)
    after = model.backbone.state_dict()
    ids = sorted(set(model.special.values()))
    weight = "model.embed_tokens.weight"
    rows = torch.zeros(after[weight].shape[0], dtype=torch.bool)
    rows[ids] = True
    assert not torch.equal(after[weight][rows], before[weight][rows])
    assert torch.equal(after[weight][~rows], before[weight][~rows])
    assert all(torch.equal(after[k], before[k]) for k in after if k != weight and k != "lm_head.weight")


def test_discrete_input_units_are_fitted_before_training_and_saved(data_dir, tmp_path):
    """A model that listens through units: train() fits the unit codebook on the training inputs'
    features before step 0, the unit embeddings learn, and the saved model codes and listens the same."""
    enc = {"kind": "whisper", "whisper_d_model": 32, "whisper_layers": 1, "whisper_heads": 2}
    enc.update(whisper_max_seconds=4.0, frozen=True, downsample=2, input_units=16)
    cfg = config(data_dir, tmp_path, max_steps=4, **{"model.overrides": {"encoder": enc}})
    res = train(cfg)
    model = FlowOmni.from_pretrained(res.model_dir)
    assert not model.encoder.needs_fit and int(model.encoder.units.fitted_tokens) > 16
    L.seed_everything(cfg.seed, verbose=False)  # the weights train() started from
    assert not torch.equal(build_model(cfg).encoder.adapter.weight, model.encoder.adapter.weight)
    entry = read_manifest(data_dir / "train.jsonl")[0]
    feats = model.encoder.featurize(load_audio(entry.audio))
    emb, n = model.encoder(feats[None], torch.tensor([feats.shape[0]]))
    assert int(n[0]) == model.encoder.output_length(feats.shape[0]) > 0
    rows = emb[0, : int(n[0])]
    # Every position is a row of the unit table, and not all the same row.
    table = model.encoder.adapter.weight
    assert torch.cdist(rows, table).min(-1).values.max() == 0 and len(rows.unique(dim=0)) > 1


def test_codebooks_are_fitted_on_the_speech_the_model_says(data_dir, tmp_path):
    """train() fits a k-means model's token statistics on every training file and its codebook on the
    spoken targets alone (here the answer files, also the T→A targets), not on the input voices."""
    import dataclasses

    from flow_omni.training.datamodule import FlowOmniDataModule

    entries = read_manifest(data_dir / "train.jsonl")
    n = len(entries)
    spoken = [dataclasses.replace(e, target_audio=entries[(i + 1) % n].answer_audio) for i, e in enumerate(entries)]
    write_manifest(data_dir / "spoken_targets.jsonl", spoken)
    q = {"codebook_size": 8, "iterations": 3}
    train_on = [str(data_dir / "spoken_targets.jsonl")]
    cfg = config(
        data_dir,
        tmp_path,
        max_steps=1,
        **{"model.overrides": {"tokens": "kmeans", "quantizer": q}, "data.train": train_on},
    )
    trained = FlowOmni.from_pretrained(train(cfg).model_dir)

    def fitted(spoken_only: bool) -> torch.Tensor:
        model = build_model(cfg)
        data = FlowOmniDataModule(model, cfg.data)
        data.setup("fit")
        model.fit_speech_stats(mels=data.speech_mels(cfg.stats_max_files))
        mels = data.speech_mels(cfg.codebook_max_files, spoken_only=spoken_only)
        model.fit_speech_head([model.speech_tokenizer.encode_mel(m) for m in mels])
        return model.speech.quantizer.codebooks

    assert torch.equal(trained.speech.quantizer.codebooks, fitted(spoken_only=True))
    assert not torch.allclose(trained.speech.quantizer.codebooks, fitted(spoken_only=False))


def test_nan_guard_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    cfg = config(
        data_dir,
        tmp_path / "nan",
        max_steps=30,
        checkpoint_every_steps=1,
        **{"optim.lr": 1e30, "optim.warmup_steps": 0, "optim.grad_clip": 0.0},
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is kept") as info:
        train(cfg)
    msg = str(info.value)
    assert "lower optim.lr" in msg.lower() or "Lower optim.lr" in msg
    last = tmp_path / "nan" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)  # complete and loadable
    assert state["global_step"] < 30
    assert not (tmp_path / "nan" / "model").exists()  # nothing exported from a broken run


def test_bad_lines_are_reported_and_skipped(data_dir, tmp_path):
    lines = (data_dir / "train.jsonl").read_text().splitlines()
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    bad = [
        json.dumps({"id": "gone", "audio": str(data_dir / "wavs" / "nope.wav"), "text": "x"}),
        json.dumps({"id": "silent_text", "audio": str(data_dir / "wavs" / "q0.wav"), "text": "  "}),
        json.dumps({"id": "broken", "audio": str(tmp_path / "corrupt.wav"), "text": "y"}),
    ]
    good = [
        json.dumps(
            {
                **json.loads(x),
                "audio": str(data_dir / json.loads(x)["audio"]),
                "answer_audio": str(data_dir / json.loads(x)["answer_audio"]),
            }
        )
        for x in lines
    ]
    (tmp_path / "mixed.jsonl").write_text("\n".join(good[:4] + bad + good[4:]) + "\n")
    res = train(config(data_dir, tmp_path / "run", max_steps=2, **{"data.train": [str(tmp_path / "mixed.jsonl")]}))
    report = (tmp_path / "run" / "data_report.txt").read_text().splitlines()
    assert len(report) == 3 and len(res.data_report) == 3
    for ident, word in (("gone", "missing"), ("silent_text", "empty"), ("broken", "audio")):
        assert any(ident in line and word in line.lower() for line in report), report
    with pytest.raises(Exception, match="mixed.jsonl:5"):
        train(
            config(
                data_dir,
                tmp_path / "stop",
                max_steps=2,
                **{"data.train": [str(tmp_path / "mixed.jsonl")], "data.on_error": "stop"},
            )
        )


def damaged_flac(path: Path, seed: int) -> Path:
    """A FLAC whose first and last frames decode but whose middle does not: the cheap validation
    before training passes it, decoding the whole file fails."""
    sf.write(path, synth_corpus(1, seed=seed, duration_range=(0.8, 0.8))[0].numpy(), 24000)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def manifest_around(path: Path, data_dir: Path, first=(), last=()) -> Path:
    """The 8 good entries of ``data_dir`` (absolute paths) with ``first`` before and ``last`` after them."""
    return write_manifest(path, [*first, *read_manifest(data_dir / "train.jsonl"), *last])


def test_unreadable_files_are_skipped_before_and_during_training(data_dir, tmp_path):
    """A file too short for the log-mel, one that fails among the speech-statistics files before step
    1, one that fails when a batch draws it: the run goes on without them and lists each, naming
    the file, in data_report.txt; `manifest validate --full` flags the same three entries."""
    short = tmp_path / "short.wav"
    sf.write(short, np.full(240, 0.1, np.float32), 24000)
    stats_bad, late_bad = damaged_flac(tmp_path / "stats.flac", 1), damaged_flac(tmp_path / "late.flac", 2)
    m = manifest_around(
        tmp_path / "m.jsonl",
        data_dir,
        first=[ManifestEntry("stats", str(stats_bad), "broken early"), ManifestEntry("short", str(short), "short")],
        last=[ManifestEntry("late", str(late_bad), "broken late")],
    )
    # The statistics are fitted on the first 4 files that decode: stats.flac, then q0 a0 q1 a1, not late.flac.
    res = train(config(data_dir, tmp_path / "run", max_steps=6, stats_max_files=4, **{"data.train": [str(m)]}))
    assert res.steps == 6 and len(res.history) == 6
    report = (tmp_path / "run" / "data_report.txt").read_text().splitlines()
    assert report == res.data_report and len(report) == 3, report
    assert f"{m}:2 (id short): audio {short} holds 240 samples" in report[0]
    assert "its log-mel needs at least 513 samples at 24000 Hz" in report[0]
    assert report[1].startswith(f"entry 'stats': cannot decode {stats_bad} (")
    assert report[2].startswith(f"entry 'late': cannot decode {late_bad} (")
    full = validate_manifest(m, check_audio="full")
    assert sorted(p.id for p in full.problems) == ["late", "short", "stats"]
    from flow_omni.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["manifest", "validate", "--full", "--quiet", str(m)])
    assert exit_info.value.code == 1


def test_a_batch_of_only_unreadable_items_leaves_the_weights_alone(data_dir, tmp_path):
    """With one item per batch, the batch that draws the broken file has nothing to train on: the run
    goes on, and that step changes no weight (zero gradients would still move AdamW's)."""
    late_bad = damaged_flac(tmp_path / "late.flac", 2)
    m = manifest_around(tmp_path / "m.jsonl", data_dir, last=[ManifestEntry("late", str(late_bad), "broken")])

    class Watch(L.Callback):
        def __init__(self):
            self.rows = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.before = [p.detach().clone() for p in module.parameters()]

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            same = all(torch.equal(a, b) for a, b in zip(self.before, module.parameters()))
            self.rows.append((isinstance(batch, EmptyBatch), same))

    watch = Watch()
    cfg = config(data_dir, tmp_path / "run", max_steps=9, stats_max_files=4, **{"data.train": [str(m)]})
    res = train(cfg.merged({"data": {"batch_size": 1}}), callbacks=[watch])
    assert res.steps == 9 and len(res.data_report) == 1 and str(late_bad) in res.data_report[0]
    assert watch.rows.count((True, True)) == 1  # the empty batch: nothing moved
    assert all(not empty and not same for empty, same in watch.rows if not empty)


def test_on_error_stop_names_the_unreadable_file_in_one_line(data_dir, tmp_path, capsys):
    from flow_omni.cli import main

    bad = damaged_flac(tmp_path / "bad.flac", 1)
    entry = ManifestEntry("bad", str(bad), "broken")
    cases = {
        "stats": manifest_around(tmp_path / "early.jsonl", data_dir, first=[entry]),  # before step 1
        "batch": manifest_around(tmp_path / "late.jsonl", data_dir, last=[entry]),  # when a batch draws it
    }
    for name, m in cases.items():
        cfg = config(data_dir, tmp_path / name, max_steps=6, stats_max_files=4, **{"data.train": [str(m)]})
        (tmp_path / f"{name}.yaml").write_text(cfg.merged({"data": {"on_error": "stop"}}).to_yaml())
        assert main(["train", "--config", str(tmp_path / f"{name}.yaml"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith(f"flow-omni train: error: entry 'bad': cannot decode {bad} (")
        assert not (tmp_path / name / "model").exists()


def cli_train(cfg_path: Path, *args: str) -> tuple[int, str]:
    """``flow-omni train --config cfg_path ARGS`` in this process: (exit code, the last line of stderr)."""
    import contextlib
    import io

    from flow_omni.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "--config", str(cfg_path), "--no-progress", *args])
    text = err.getvalue()
    assert "Traceback" not in text
    return code, (text.strip().splitlines() or [""])[-1]


def test_an_output_folder_holds_one_run(data_dir, tmp_path):
    """A fresh run refuses a folder with another run's checkpoint and model; --resume continues it
    (also from an older checkpoint, with no "-v1" file names) after removing killed writes'
    partial files; --overwrite starts clean, leaving nothing of the earlier run."""
    out = tmp_path / "run"
    cfg = config(data_dir, out, max_steps=2, checkpoint_every_steps=2)
    first = train(cfg)
    ckpts = out / "checkpoints"
    step2 = tmp_path / "step2.ckpt"
    step2.write_bytes((ckpts / "last.ckpt").read_bytes())
    kept = {
        p: p.read_bytes() for p in [ckpts / "last.ckpt", first.model_dir / "model.safetensors", out / "train_log.jsonl"]
    }
    (tmp_path / "run.yaml").write_text(cfg.to_yaml())

    code, err = cli_train(tmp_path / "run.yaml")
    assert code == 2 and err.startswith(f"flow-omni train: error: {out} already holds a training run (")
    assert "--resume" in err and "--overwrite" in err
    assert all(p.read_bytes() == data for p, data in kept.items())  # nothing of it was touched

    partial = ckpts / ".last.ckpt.k1ll3d.tmp"  # what atomic_write leaves when killed mid-write
    partial.write_bytes(b"\0" * 1000)
    assert cli_train(tmp_path / "run.yaml", "--resume", "--set", "max_steps=4")[0] == 0
    assert not partial.exists()
    resumed = FlowOmni.from_pretrained(out / "model")
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step0000004.ckpt"]
    # Again from step 2: step0000004.ckpt exists, and is overwritten rather than joined by a -v1 copy.
    assert cli_train(tmp_path / "run.yaml", "--resume", str(step2), "--set", "max_steps=4")[0] == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step0000004.ckpt"]
    assert max_diff(FlowOmni.from_pretrained(out / "model"), resumed) < 1e-6
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 4

    code, err = cli_train(tmp_path / "run.yaml", "--overwrite", "--resume", "last")
    assert code == 2 and "give one of them" in err
    args = ["--overwrite", "--set", "seed=1", "max_steps=3", "checkpoint_every_steps=3"]
    assert cli_train(tmp_path / "run.yaml", *args)[0] == 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step0000003.ckpt"]
    assert [h["step"] for h in read_loss_log(out / "train_log.jsonl")] == [0, 1, 2]
    with open(out / "logs" / "csv" / "metrics.csv") as fh:
        losses = [r for r in csv.DictReader(fh) if r["train/loss"]]
    assert [int(r["step"]) for r in losses] == [0, 1, 2]  # the new run's steps, none of the old run's
    assert max_diff(FlowOmni.from_pretrained(out / "model"), resumed) > 1e-3
    assert TrainConfig.load(out / "config.yaml").seed == 1


def test_one_training_at_a_time_per_folder(data_dir, tmp_path):
    """A second run into a folder that a live run holds is refused in one line; the lock of a run
    that was killed is no obstacle, and a run that fails lets go of it."""
    from flow_omni.training.run_folder import LOCK_NAME, RunLock

    out = tmp_path / "run"
    cfg = config(data_dir, out, max_steps=2, checkpoint_every_steps=2)
    (tmp_path / "run.yaml").write_text(cfg.to_yaml())
    with RunLock(out):  # as a live training run holds it
        code, err = cli_train(tmp_path / "run.yaml")
    assert code == 2 and f"{out} is in use by another training run (pid {os.getpid()} on " in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the refused run wrote nothing

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from flow_omni.training.run_folder import RunLock; RunLock({str(out)!r}).__enter__(); "
            "print('held', flush=True); import time; time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert holder.stdout.readline().strip() == "held"
    assert f"pid {holder.pid} on " in (out / LOCK_NAME).read_text()
    assert cli_train(tmp_path / "run.yaml")[0] == 2  # held by a live process
    holder.kill()
    holder.wait()
    assert cli_train(tmp_path / "run.yaml")[0] == 0  # its holder is dead: the lock is free

    bad = cfg.merged({"data": {"train": [str(tmp_path / "missing.jsonl")]}})
    with pytest.raises(FlowOmniError):
        train(bad, overwrite=True)
    with RunLock(out):  # released by the run that failed
        pass


@pytest.mark.parametrize("name", ["quickstart", "stage1", "stage2", "stage2_lora", "noisy_finetune", "vocoder"])
def test_builtin_recipes_load(name):
    from flow_omni.training.train import recipe_path

    path = recipe_path(name)
    if name == "vocoder":
        from flow_omni.training.vocoder import VocoderTrainConfig

        VocoderTrainConfig.load(path)
        return
    cfg = TrainConfig.load(path)
    if name == "stage1":
        assert "backbone" not in cfg.trainable_modules() and set(cfg.data.task_weights) == {"A2T", "T2A"}
    if name == "stage2_lora":
        assert cfg.lora is not None and "backbone" not in cfg.trainable_modules()
    if name == "noisy_finetune":
        assert cfg.data.p_augment > 0 and not cfg.data.augment_targets and cfg.eval.conditions[0] == "clean"


def test_config_errors_are_specific(tmp_path):
    from flow_omni.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        TrainConfig.from_dict({"max_step": 3})
    with pytest.raises(ConfigError, match="backbone's own weights stay frozen"):
        TrainConfig.from_dict({"lora": {"r": 4}, "trainable": ["all"]})
    with pytest.raises(ConfigError, match="unknown task"):
        TrainConfig.from_dict({"data": {"task_weights": {"ASR": 1.0}}})
    with pytest.raises(ConfigError, match="codebook_max_files must be >= 1"):
        TrainConfig.from_dict({"codebook_max_files": 0})
    from flow_omni.training.train import recipe_path

    with pytest.raises(ConfigError, match="built-in recipe"):
        recipe_path("no_such_recipe")
    # `--set optim.lr=2e-3` reaches us as the string '2e-3' (YAML 1.1); it is the number, other text is not
    assert TrainConfig().merged(parse_overrides(["optim.lr=2e-3"])).optim.lr == 0.002
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got '2e-3x'"):
        TrainConfig.from_dict({"optim": {"lr": "2e-3x"}})


def test_fsdp_strategy_with_lora_uses_original_parameters(data_dir, tmp_path):
    """FSDP cannot run on gloo/CPU here; check the strategy we build for it (the LoRA caveat)."""
    from lightning.pytorch.strategies import FSDPStrategy

    from flow_omni.training.train import _strategy

    cfg = config(data_dir, tmp_path, strategy="fsdp", trainable=["heads"], lora={"r": 2})
    strategy = _strategy(cfg, build_model(cfg))
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs.get("use_orig_params") is True


def test_bf16_mixed_trains_on_cpu_with_the_flow_head_in_float32(data_dir, tmp_path):
    """``precision: bf16-mixed`` (the setting of a GPU run) under CPU autocast: finite losses on every
    task, the LLM's matmuls in bf16, and in float32 what must stay there: the features the data pipeline
    computes (the log-mel), the flow head (its velocity is the speech token's update), the loss terms,
    and the master weights and their gradients."""
    seen: dict[str, set] = {}

    def note(name):
        def hook(module, args, out):
            seen.setdefault(f"{name} in", set()).add(args[0].dtype)
            seen.setdefault(f"{name} out", set()).add(out.dtype)

        return hook

    class Watch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            m = pl_module.model
            m.backbone.base_model.layers[0].self_attn.q_proj.register_forward_hook(note("llm q_proj"))
            m.encoder.register_forward_hook(lambda mod, args, out: note("encoder")(mod, args, out[0]))
            m.speech.output_head.final_layer.linear.register_forward_hook(note("flow head"))  # the velocity

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads = {p.grad.dtype for p in pl_module.model.parameters() if p.grad is not None}
            seen.setdefault("grads", set()).update(grads)

    res = train(config(data_dir, tmp_path, precision="bf16-mixed", max_steps=4), callbacks=[Watch()])
    assert res.steps == 4
    for h in res.history:
        assert all(np.isfinite(h[t]) for t in ("loss", "text", "state", "flow")), h
    assert seen["llm q_proj out"] == {torch.bfloat16}  # autocast is on
    assert seen["encoder in"] == {torch.float32}  # log-mel features, made outside autocast
    assert seen["flow head in"] == seen["flow head out"] == {torch.float32}
    assert seen["grads"] == {torch.float32}
    assert {p.dtype for p in FlowOmni.from_pretrained(res.model_dir).parameters()} == {torch.float32}


def test_precision_auto_trains_in_float32_where_bf16_matmuls_are_not_native(data_dir, tmp_path, monkeypatch, capsys):
    """``precision: auto`` (the CPU recipes') is bf16-mixed where this machine multiplies bf16 matrices
    natively and 32-true elsewhere, resolved when the run starts, so that config.yaml records what the
    run trained in; asking for bf16-mixed where bf16 is not native trains as asked, its matrix products
    emulated in float32 (flow_omni.emulated_bf16) while fit runs, and says so."""
    from flow_omni import precision
    from flow_omni.emulated_bf16 import emulation_active

    class Emulated(L.Callback):
        def __init__(self):
            self.seen: set[bool] = set()

        def on_train_batch_end(self, *args):
            self.seen.add(emulation_active())

    for fast, want in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(precision, "fast_bf16_matmul", lambda device_type="cpu", fast=fast: fast)
        assert TrainConfig(precision="auto").with_precision_resolved().precision == want
        assert TrainConfig(precision="32-true").with_precision_resolved().precision == "32-true"
    # Here (fast is False): auto trains in float32 and says so in config.yaml, without a note.
    watch = Emulated()
    train(config(data_dir, tmp_path / "auto", precision="auto", max_steps=1), callbacks=[watch])
    assert TrainConfig.load(tmp_path / "auto" / "config.yaml").precision == "32-true"
    assert "native bf16" not in capsys.readouterr().out
    assert watch.seen == {False}
    watch = Emulated()
    train(config(data_dir, tmp_path / "bf16", precision="bf16-mixed", max_steps=2), callbacks=[watch])
    assert TrainConfig.load(tmp_path / "bf16" / "config.yaml").precision == "bf16-mixed"
    out = capsys.readouterr().out
    assert "note: precision bf16-mixed on a CPU without native bf16 matrix products" in out
    assert watch.seen == {True}
    assert not emulation_active()  # autocast's own kernels are back after the run


def test_a_resumed_run_keeps_the_precision_it_started_in(data_dir, tmp_path, monkeypatch, capsys):
    """A run begun with ``precision: auto`` where bf16 is native (bf16-mixed) and resumed where it is
    not goes on in bf16-mixed, which its checkpoint names, instead of switching to what auto would
    choose there; a precision named outright on resuming is used as named. Both say so."""
    from flow_omni import precision
    from flow_omni.training.checkpoint_io import read_training_checkpoint
    from flow_omni.training.module import TRAIN_CONFIG_KEY, FlowOmniModule

    run = tmp_path / "run"
    monkeypatch.setattr(precision, "fast_bf16_matmul", lambda device_type="cpu": True)
    train(config(data_dir, run, precision="auto", max_steps=4))
    assert TrainConfig.load(run / "config.yaml").precision == "bf16-mixed"
    kept = read_training_checkpoint(run / "checkpoints" / "last.ckpt")[TRAIN_CONFIG_KEY]
    assert TrainConfig.from_yaml(kept) == TrainConfig.load(run / "config.yaml")
    capsys.readouterr()
    monkeypatch.setattr(precision, "fast_bf16_matmul", lambda device_type="cpu": False)
    assert train(config(data_dir, run, precision="auto", max_steps=6), resume="last").steps == 6
    out = capsys.readouterr().out
    assert "resuming in precision bf16-mixed, the one the run started in (auto would choose 32-true here)" in out
    assert TrainConfig.load(run / "config.yaml").precision == "bf16-mixed"
    train(config(data_dir, run, precision="32-true", max_steps=8), resume="last")
    assert "resuming a run that trained in bf16-mixed in 32-true, as asked" in capsys.readouterr().out
    assert TrainConfig.load(run / "config.yaml").precision == "32-true"
    # A checkpoint written before checkpoints kept their config: the run folder's config.yaml says.
    monkeypatch.setattr(FlowOmniModule, "on_save_checkpoint", lambda self, checkpoint: None)
    old = tmp_path / "old"
    monkeypatch.setattr(precision, "fast_bf16_matmul", lambda device_type="cpu": True)
    train(config(data_dir, old, precision="auto", max_steps=4))
    assert TRAIN_CONFIG_KEY not in read_training_checkpoint(old / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(precision, "fast_bf16_matmul", lambda device_type="cpu": False)
    train(config(data_dir, old, precision="auto", max_steps=6), resume="last")
    assert "resuming in precision bf16-mixed, the one the run started in" in capsys.readouterr().out
    assert TrainConfig.load(old / "config.yaml").precision == "bf16-mixed"


def test_noisy_finetune_reports_before_and_after(data_dir, straight, tmp_path, capsys, chromium):
    from flow_omni.training.train import recipe_path

    _, ref = straight
    cfg = TrainConfig.load(recipe_path("noisy_finetune")).merged(
        parse_overrides(
            [
                f"out_dir={tmp_path / 'ft'}",
                f"model.init_from={ref.model_dir}",
                "threads=1",
                "progress=false",
                f"data.train=[{data_dir / 'train.jsonl'}]",
                "data.valid=[]",
                "data.batch_size=4",
                "max_steps=4",
                "checkpoint_every_steps=2",
                "loggers=[csv]",
                f"eval.manifests={{held_out: {data_dir / 'valid.jsonl'}}}",
                "eval.conditions=[clean, white@5]",
                "eval.max_items=2",
            ]
        )
    )
    res = train(cfg)
    # Without a progress bar the minutes of scoring still say what runs (stage lines are not bars).
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[train")]
    assert [ln.split(" | ")[0] for ln in lines[:-1]] == [
        "[train 1/3] scoring before training: held_out: ASR under 2 conditions, TTS, 2 items at most",
        "[train] held_out: ASR clean (1/3)",
        "[train] held_out: ASR white@5 (2/3)",
        "[train] held_out: TTS (3/3)",
        "[train 2/3] training: to step 4",
        "[train 3/3] scoring after training: held_out: ASR under 2 conditions, TTS, 2 items at most",
        "[train] held_out: ASR clean (1/3)",
        "[train] held_out: ASR white@5 (2/3)",
        "[train] held_out: TTS (3/3)",
    ]
    assert lines[-1].startswith("[train] done in ") and "left" in lines[5]  # after = before's measured time
    report = res.eval_report.read_text()
    for cond in ("clean", "white@5"):
        assert f"| {cond} |" in report
    numbers = json.loads((res.out_dir / "eval.json").read_text())
    assert set(numbers) == {"before", "after"}
    assert numbers["before"]["held_out"]["asr"]["white@5"]["n"] == 2
    assert (res.out_dir / "eval_cer.png").stat().st_size > 1000
    # The listening page: the same table, and each item's input as heard under both conditions (the same audio
    # before and after) with the transcripts of the model before and after, playable in a browser.
    page = (res.out_dir / "report.html").read_text()
    for cond in ("clean", "white@5"):
        b, a = numbers["before"]["held_out"]["asr"][cond], numbers["after"]["held_out"]["asr"][cond]
        assert f"<td>{cond}</td><td>{b['cer']:.3f}</td><td>{a['cer']:.3f}</td>" in page
    state = check_page(chromium, res.out_dir / "report.html", tmp_path / "finetune_report.png")
    heard = sorted(x["src"] for x in state["audio"] if "_input_" in x["src"])
    assert heard == sorted(f"wavs/before/held_out_input_{c}_u{i}.wav" for c in ("clean", "white_5") for i in (0, 1))
    assert page.count("transcript:") == 2 * 2 * 2  # 2 items x 2 conditions x before and after
    card = (res.model_dir / "README.md").read_text()  # the card was rewritten with what was measured after training
    assert f"fine-tuned from `{ref.model_dir}`" in card and "a share of 0.8 of the input utterances perturbed" in card
    after, before = numbers["after"]["held_out"]["asr"]["white@5"], numbers["before"]["held_out"]["asr"]["white@5"]
    assert f"| held_out | asr | white@5 | cer | {after['cer']:.3f} | {before['cer']:.3f} | 2 |" in card


def test_cli_end_to_end_on_the_espeak_corpus(tmp_path, capsys):
    """flow-omni corpus → flow-omni train (a few dozen steps) → the export loads and generates."""
    from flow_omni.cli import main

    corpus = tmp_path / "corpus"
    assert (
        main(["corpus", "--out", str(corpus), "--sentences", "0", "--qa", "16", "--interleaved", "0", "--quiet"]) == 0
    )
    assert (corpus / "train.jsonl").is_file()
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                "quickstart",
                "--out",
                str(out),
                "--no-progress",
                "--set",
                f"data.train=[{corpus / 'train.jsonl'}]",
                f"data.valid=[{corpus / 'valid.jsonl'}]",
                "data.task_weights={A2T: 1.0, T2A: 1.0, A2A: 1.0}",
                "data.batch_size=4",
                "max_steps=30",
                "optim.warmup_steps=5",
                "val_every_steps=15",
                "checkpoint_every_steps=15",
                "threads=1",
                "loggers=[csv]",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "trained 30 steps" in printed and str(out / "model") in printed
    from flow_omni.training.module import read_loss_log

    losses = [h["loss"] for h in read_loss_log(out / "train_log.jsonl")]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    model = FlowOmni.from_pretrained(out / "model")
    from flow_omni.audio.io import load_audio
    from flow_omni.data.manifest import read_manifest

    entry = read_manifest(corpus / "valid.jsonl")[0]
    got = model.generate(
        [Sample("A2A", prompt_audio=model.prepare_audio(load_audio(entry.audio)))], max_new_positions=30
    )[0]
    assert got.positions > 0


def test_inference_imports_without_lightning():
    code = (
        "import sys, flow_omni, flow_omni.models.generation, flow_omni.data, flow_omni.eval.robustness, "
        "flow_omni.bench, flow_omni.cli; "
        "assert 'lightning' not in sys.modules and 'peft' not in sys.modules, 'lightning imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_progress_counts_steps_and_hides_known_noise(data_dir, tmp_path, capfd):
    """The bar counts steps to max_steps (not batches of an open-ended epoch); Lightning's cloud-logger
    tip and its known deprecation and logging-interval warnings are not printed."""
    import logging
    import warnings

    class Keep(logging.Handler):  # Lightning's handlers write to the stream pytest had at import
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    keep, log = Keep(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.addHandler(keep)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(config(data_dir, tmp_path / "run", progress=True, max_steps=6, val_every_steps=100))
    finally:
        log.removeHandler(keep)
    printed = capfd.readouterr()
    assert "6/6" in printed.err and "step" in printed.err and "Epoch" not in printed.err, printed.err[-500:]
    assert keep.messages and not [m for m in keep.messages if "litlogger" in m], keep.messages
    noise = [str(w.message) for w in caught if "LeafSpec" in str(w.message) or "logging interval" in str(w.message)]
    assert not noise, noise
