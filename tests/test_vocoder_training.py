"""Vocoder training (vocos' GAN recipe under Lightning): a tiny Vocos trained on synthetic speech.

One training run (module fixture) is shared by most tests: 4 synthetic utterances, a 32-dim
1-layer Vocos, 2 × 2048-sample crops per batch, 24 batches of mel-only pre-training, then 6 GAN
batches. The discriminators are vocos' own (their widths are fixed; only one period / one
resolution here, to keep the run at a few seconds).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch

pytest.importorskip("lightning")

from lightning.pytorch.callbacks import Callback  # noqa: E402

from flow_omni.audio.synth import synth_speech  # noqa: E402
from flow_omni.config import Config  # noqa: E402
from flow_omni.data.manifest import ManifestEntry, read_manifest, write_manifest  # noqa: E402
from flow_omni.errors import ConfigError  # noqa: E402
from flow_omni.training.vocoder import (  # noqa: E402
    AudioSegmentDataset,
    SeededEpochSampler,
    VocoderTrainConfig,
    build_training_module,
    multi_resolution_stft_distance,
    train_vocoder,
)
from flow_omni.vocoder import Vocoder, build_vocos  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "flow_omni" / "training" / "recipes" / "vocoder.yaml"
PRETRAIN, STEPS = 24, 30


def _corpus(root: Path) -> tuple[Path, list[Path]]:
    root.mkdir(parents=True, exist_ok=True)
    entries, paths = [], []
    for i in range(4):
        path = root / f"u{i}.wav"
        # 16 kHz files: the dataset must resample them to the vocoder's 24 kHz.
        speech = synth_speech(0.4 + 0.2 * i, 16000, f0=100.0 + 35 * i, seed=i)
        # A -66 dBFS noise floor, as in any recording: digital silence (log-mel at the 1e-7 clamp)
        # would dominate the mel L1 of a barely trained vocoder.
        floor = 5e-4 * torch.randn(speech.shape, generator=torch.Generator().manual_seed(100 + i))
        sf.write(path, (speech + floor).numpy(), 16000)
        entries.append(ManifestEntry(id=f"u{i}", audio=path.name, text="synthetic"))
        paths.append(path)
    return write_manifest(root / "train.jsonl", entries), paths


def _tiny_config(manifest: Path, out: Path, **changes) -> VocoderTrainConfig:
    base = VocoderTrainConfig.load(RECIPE)  # the recipe with tiny overrides, as a user would do
    tiny = dict(
        train_manifests=[str(manifest)],
        val_manifests=[str(manifest)],
        out_dir=str(out),
        vocoder={**base.vocoder.to_dict(), "dim": 32, "intermediate_dim": 64, "num_layers": 1},
        segment_samples=2048,
        val_segment_samples=4096,
        batch_size=2,
        num_workers=0,
        seed=0,
        max_steps=STEPS,
        pretrain_mel_steps=PRETRAIN,
        lr_generator=5e-3,
        warmup_steps=2,
        mpd_periods=[2],
        mrd_fft_sizes=[512],
        log_every_steps=1,
        checkpoint_every_steps=12,
        val_every_steps=STEPS,
        val_max_batches=2,
    )
    return base.replace(**{**tiny, **changes})


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).clone()


class _Watch(Callback):
    """Per batch: did the discriminators / generator change, and does the discriminator AdamW have state?"""

    def __init__(self) -> None:
        self.rows: list[tuple[bool, bool, int]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = (_flat(module.multiperioddisc), _flat(module.multiresddisc), _flat(module.vocoder))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        mpd, mrd, gen = self.before
        same = torch.equal(mpd, _flat(module.multiperioddisc)) and torch.equal(mrd, _flat(module.multiresddisc))
        disc_changed = not same
        gen_changed = not torch.equal(gen, _flat(module.vocoder))
        self.rows.append((disc_changed, gen_changed, len(trainer.optimizers[0].state)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vocoder_training")
    manifest, wavs = _corpus(root / "data")
    cfg = _tiny_config(manifest, root / "run")
    watch = _Watch()
    exported = train_vocoder(cfg, progress=False, callbacks=[watch])
    return {"cfg": cfg, "root": root, "manifest": manifest, "wavs": wavs, "exported": exported, "watch": watch}


def test_recipe_is_the_full_size_vocos_mel_24khz():
    cfg = VocoderTrainConfig.load(RECIPE)  # Config.load: YAML by suffix
    assert isinstance(cfg, Config)
    v = cfg.vocoder
    assert (v.sample_rate, v.n_fft, v.hop_length, v.n_mels, v.padding) == (24000, 1024, 256, 100, "center")
    assert (v.dim, v.intermediate_dim, v.num_layers) == (512, 1536, 8)
    assert (cfg.mel_loss_coeff, cfg.mrd_loss_coeff, cfg.lr_generator, cfg.segment_samples) == (45.0, 0.1, 5e-4, 16384)
    assert cfg.mpd_periods == [2, 3, 5, 7, 11] and cfg.mrd_fft_sizes == [2048, 1024, 512]
    n_params = sum(p.numel() for p in build_vocos(v).parameters())
    assert 13.0e6 < n_params < 14.0e6  # charactr/vocos-mel-24khz: 13.5 M


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="multiple of hop_length"):
        VocoderTrainConfig(segment_samples=16000)
    with pytest.raises(ConfigError, match="precision"):
        VocoderTrainConfig(precision="16-mixed")
    with pytest.raises(ConfigError, match="pretrain_mel_steps"):
        VocoderTrainConfig(max_steps=10, pretrain_mel_steps=11)
    with pytest.raises(ConfigError, match="did you mean 'segment_samples'"):
        VocoderTrainConfig.from_dict({"segment_sample": 4096})


def test_dataset_crops_are_seeded_padded_and_normalised(tmp_path):
    _, wavs = _corpus(tmp_path)
    files = [str(p) for p in wavs]
    ds = AudioSegmentDataset(files, 12288, 24000, seed=3, gain_db_range=(-6.0, -1.0), val_gain_db=-3.0)
    a, b, c = ds[(3, 0)], ds[(3, 0)], ds[(3, 1)]  # u3: 1.0 s, random 0.51 s crops
    assert a.shape == (12288,) and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, AudioSegmentDataset(files, 12288, 24000, seed=4)[(3, 0)])
    peaks = [20 * math.log10(float(ds[(0, d)].abs().max())) for d in range(8)]  # whole (tiled) clip
    assert all(-6.0 - 1e-3 <= p <= -1.0 + 1e-3 for p in peaks) and max(peaks) - min(peaks) > 1.0
    # u0 lasts 0.4 s = 9600 samples at 24 kHz: tiled to length, so its start repeats at 9600.
    short = ds[0]
    assert short.shape == (12288,) and abs(20 * math.log10(float(short.abs().max())) + 3.0) < 1e-3
    assert torch.equal(short[9600:12288], short[: 12288 - 9600])

    sampler = SeededEpochSampler(4, seed=3, min_items=6)
    sampler.set_epoch(5)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 6 and keys == list(sampler)
    assert len(set(keys)) == 6 and {i for i, _ in keys} == {0, 1, 2, 3}
    sampler.set_epoch(6)
    assert list(sampler) != keys


def test_gan_starts_after_mel_pretraining(run):
    rows = run["watch"].rows
    assert len(rows) == STEPS
    # The generator trains on every batch but the first, whose warm-up learning rate is 0.
    assert [gen for _, gen, _ in rows] == [False] + [True] * (STEPS - 1)
    # Discriminators: untouched (and no AdamW state) during pre-training, updated on every GAN batch.
    assert [disc for disc, _, _ in rows] == [False] * PRETRAIN + [True] * (STEPS - PRETRAIN)
    assert all(n == 0 for _, _, n in rows[:PRETRAIN]) and all(n > 0 for _, _, n in rows[PRETRAIN:])


def test_losses_are_logged_per_term(run):
    (metrics,) = (run["root"] / "run" / "logs").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    train = [r for r in rows if r.get("generator/mel_loss")]
    assert [int(r["step"]) for r in train] == list(range(STEPS))
    gan_terms = [
        "discriminator/total",
        "discriminator/multi_period_loss",
        "discriminator/multi_res_loss",
        "generator/multi_period_loss",
        "generator/multi_res_loss",
        "generator/feature_matching_mp",
        "generator/feature_matching_mrd",
    ]
    for r in train:
        assert all(bool(r[k]) == (int(r["step"]) >= PRETRAIN) for k in gan_terms)
        assert float(r["mel_loss_coeff"]) == 45.0
    lrs = [float(r["lr/generator"]) for r in train]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(5e-3) and lrs[-1] < 1e-4  # warm-up, then cosine
    val = [r for r in rows if r.get("val/mel_loss")]
    assert len(val) == 1 and float(val[0]["val/mrstft"]) > 0
    ckpts = sorted(p.name for p in (run["root"] / "run" / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "vocos-step00000012.ckpt", "vocos-step00000024.ckpt"]
    last = torch.load(run["root"] / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * STEPS  # the end of the run; Lightning counts both optimisers


def test_exported_vocoder_loads_decodes_and_improved_on_the_mel_loss(run):
    cfg = run["cfg"]
    vocoder = Vocoder.from_pretrained(run["exported"])
    assert vocoder.config == cfg.vocoder
    # The export is the final generator of the run, bit for bit.
    state = torch.load(run["root"] / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in vocoder.vocos.state_dict().items():
        assert torch.equal(v, state["vocoder.vocos." + k]), k

    initial = build_training_module(cfg).vocoder.eval()  # same seed → the run's initial weights
    ds = AudioSegmentDataset([str(p) for p in run["wavs"]], 4096, cfg.vocoder.sample_rate)
    audio = torch.stack([ds[i] for i in range(len(ds))])  # (4, 4096), validation crops
    mel = initial.vocos.feature_extractor(audio)
    assert mel.shape == (4, 100, 17)
    with torch.no_grad():
        out = vocoder.decode(mel)
        assert out.shape == (4, cfg.vocoder.num_samples(17)) == (4, 4096)
        before = multi_resolution_stft_distance(initial.decode(mel), audio)
        after = multi_resolution_stft_distance(out, audio)
        mel_before = (initial.vocos.feature_extractor(initial.decode(mel)) - mel).abs().mean()
        mel_after = (initial.vocos.feature_extractor(out) - mel).abs().mean()
    assert mel_after < 0.7 * mel_before, (mel_before, mel_after)
    assert after < before


def test_resume_reproduces_the_uninterrupted_run(run):
    cfg = run["cfg"].replace(out_dir=str(run["root"] / "resumed"))
    ckpt = run["root"] / "run" / "checkpoints" / "vocos-step00000024.ckpt"
    exported = train_vocoder(cfg, progress=False, resume=ckpt)
    a = Vocoder.from_pretrained(exported).vocos.state_dict()
    b = Vocoder.from_pretrained(run["exported"]).vocos.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unreadable_files_are_skipped_and_reported_or_stop_the_run(tmp_path, capsys):
    """A missing file and a FLAC damaged in the middle: with on_error skip the run trains on crops of
    the other files and lists both in data_report.txt; with stop it ends with one line naming one."""
    from flow_omni.cli import main

    manifest, _ = _corpus(tmp_path / "data")
    damaged = tmp_path / "data" / "damaged.flac"
    sf.write(damaged, synth_speech(0.8, 24000, seed=9).numpy(), 24000)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(range(64))
    damaged.write_bytes(bytes(data))
    entries = [
        ManifestEntry(id="gone", audio="missing.wav", text="x"),
        ManifestEntry(id="damaged", audio="damaged.flac", text="x"),
    ]
    with_bad = write_manifest(tmp_path / "data" / "bad.jsonl", entries + read_manifest(manifest, resolve=False))
    small = dict(max_steps=4, pretrain_mel_steps=4, val_manifests=[], checkpoint_every_steps=4)
    cfg = _tiny_config(with_bad, tmp_path / "skip", **small)
    train_vocoder(cfg, progress=False)
    report = (tmp_path / "skip" / "data_report.txt").read_text().splitlines()
    assert sorted(report) == [
        f"audio file {tmp_path / 'data' / 'missing.wav'} does not exist",
        f"cannot decode {damaged} (Error : flac decoder lost sync.); the file is truncated or corrupt",
    ]
    assert torch.load(tmp_path / "skip" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8

    (tmp_path / "stop.yaml").write_text(cfg.replace(out_dir=str(tmp_path / "stop"), on_error="stop").to_yaml())
    assert main(["train-vocoder", "--config", str(tmp_path / "stop.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("flow-omni train-vocoder: error: ") and ("missing.wav" in last or "damaged.flac" in last)
    assert not (tmp_path / "stop" / "vocoder").exists()


def test_the_output_folder_holds_one_run(tmp_path):
    from flow_omni.errors import OutputFolderError
    from flow_omni.training.run_folder import RunLock

    manifest, _ = _corpus(tmp_path / "data")
    cfg = _tiny_config(manifest, tmp_path / "run", max_steps=2, pretrain_mel_steps=2, val_manifests=[])
    with RunLock(tmp_path / "run"), pytest.raises(OutputFolderError, match="in use by another training run"):
        train_vocoder(cfg, progress=False)
    train_vocoder(cfg, progress=False)
    ckpts = tmp_path / "run" / "checkpoints"
    before = (ckpts / "last.ckpt").read_bytes()
    with pytest.raises(OutputFolderError, match="already holds a training run .*--overwrite"):
        train_vocoder(cfg, progress=False)
    assert (ckpts / "last.ckpt").read_bytes() == before
    partial = ckpts / ".last.ckpt.k1ll3d.tmp"
    partial.write_bytes(b"\0" * 1000)
    train_vocoder(cfg, progress=False, resume=ckpts / "last.ckpt")  # at its end already: nothing to train
    assert not partial.exists()
    train_vocoder(cfg.replace(seed=1), progress=False, overwrite=True)
    assert (ckpts / "last.ckpt").read_bytes() != before
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]
    assert [p.name for p in (tmp_path / "run" / "logs").iterdir()] == ["version_0"]  # the old run's logs went


def test_multi_resolution_stft_distance():
    x = torch.randn(2, 4096, generator=torch.Generator().manual_seed(0))
    assert float(multi_resolution_stft_distance(x, x)) == 0.0
    assert float(multi_resolution_stft_distance(0.5 * x, x)) > 0.5
    with pytest.raises(ValueError):
        multi_resolution_stft_distance(x[:, :256], x[:, :256])


def test_bf16_autocast_keeps_the_mel_and_the_istft_head_in_float32(tmp_path):
    """``precision: bf16-mixed``: the backbone runs in bf16, but the log-mel it reads (the speech-token
    space, float32 everywhere else) and the ISTFT head that makes the waveform stay in float32."""
    module = build_training_module(_tiny_config(tmp_path / "m.jsonl", tmp_path / "run"))
    vocos = module.vocoder.vocos
    seen = {}
    vocos.backbone.embed.register_forward_hook(lambda m, args, out: seen.update(mel=args[0].dtype, conv=out.dtype))
    audio = synth_speech(0.3, 24000, seed=0)[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(audio)
    assert seen == {"mel": torch.float32, "conv": torch.bfloat16}
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
