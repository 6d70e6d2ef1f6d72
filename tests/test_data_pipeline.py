"""Data pipeline: feature cache, bucketed batch plan (determinism, sharding, resume), dataset tasks."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch

from flow_omni import FlowOmni, FlowOmniConfig
from flow_omni.audio.augment import AugmentConfig
from flow_omni.audio.io import save_audio
from flow_omni.audio.mel import LogMel
from flow_omni.audio.synth import synth_corpus
from flow_omni.data.dataset import Collator, DataConfig, SpeechDataset
from flow_omni.data.features import FeatureCache
from flow_omni.data.manifest import ManifestEntry, Segment
from flow_omni.data.report import DataReport, EmptyBatch, Skipped
from flow_omni.data.sampler import BucketBatchSampler, ItemKey
from flow_omni.errors import AudioError, ConfigError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    audios = synth_corpus(6, seed=3, duration_range=(0.3, 1.2))
    paths = []
    for i, a in enumerate(audios):
        paths.append(save_audio(root / f"u{i}.wav", a))
    return root, paths, audios


def test_feature_cache_hits_and_invalidates(files, tmp_path):
    _, paths, audios = files
    cache = FeatureCache(tmp_path / "cache")
    first = cache.mel(paths[0])
    assert cache.stats.misses == 1 and cache.stats.hits == 0 and len(cache) == 1
    again = FeatureCache(tmp_path / "cache").mel(paths[0])  # a new process would see the same files
    assert torch.equal(first, again)
    from flow_omni.audio.io import load_audio

    assert torch.allclose(first, LogMel()(load_audio(paths[0])))
    # Rewriting the file (new content, new mtime) must not serve the stale entry.
    time.sleep(0.01)
    save_audio(paths[0].with_name("tmp.wav"), audios[1])
    os.replace(paths[0].with_name("tmp.wav"), paths[0])
    c2 = FeatureCache(tmp_path / "cache")
    assert c2.mel(paths[0]).shape == LogMel()(load_audio(paths[0])).shape and c2.stats.misses == 1
    save_audio(paths[0], audios[0])  # restore for other tests
    # A damaged entry is recomputed, not trusted.
    for entry in (tmp_path / "cache").glob("*/*.safetensors"):
        entry.write_bytes(b"garbage")
    c3 = FeatureCache(tmp_path / "cache")
    assert torch.allclose(c3.mel(paths[0]), first) and c3.stats.misses == 1


def make_sampler(n=40, bs=4, world=1, rank=0, seed=0, weights=None):
    eligible = [["A2T", "T2A"] + (["A2A", "T2T"] if i % 2 else []) for i in range(n)]
    cost = lambda i, t: (i * 7919) % 97 + (50 if t == "A2A" else 0)  # noqa: E731
    return BucketBatchSampler(
        eligible,
        cost,
        weights or {"A2T": 1, "T2A": 1, "A2A": 1, "T2T": 1},
        bs,
        bucket_size=4,
        seed=seed,
        rank=rank,
        world_size=world,
    )


def test_plan_is_deterministic_and_buckets_by_length():
    a, b = make_sampler(), make_sampler()
    assert list(a) == list(b)
    assert make_sampler(seed=1).plan(0) != a.plan(0)
    assert a.plan(0) != a.plan(1)  # a new epoch reshuffles and redraws tasks
    # Within a batch the lengths are close: the spread is far below that of random batches.
    s = make_sampler()
    spread = [max(s.cost(k.index, k.task) for k in b) - min(s.cost(k.index, k.task) for k in b) for b in s.plan(0)]
    assert sum(spread) / len(spread) < 30  # costs range over 0..146
    # Only eligible tasks are drawn; every entry appears once per epoch.
    keys = [k for b in s.plan(0) for k in b]
    assert len({k.index for k in keys}) == len(keys) == 40
    assert all(k.task in ("A2T", "T2A") for k in keys if k.index % 2 == 0)


def test_ddp_shards_partition_the_global_batch():
    one = make_sampler()
    ranks = [make_sampler(world=2, rank=r) for r in range(2)]
    for g, r0, r1 in zip(one, *ranks):
        assert sorted(r0 + r1, key=lambda k: k.index) == sorted(g, key=lambda k: k.index)
        assert len(r0) == len(r1) == 2
    with pytest.raises(ConfigError, match="divisible"):
        make_sampler(bs=3, world=2)


def test_resume_continues_the_stream():
    s = make_sampler()
    per_epoch = len(s)
    stream = list(s) + list(s)  # epochs 0 and 1
    r = make_sampler()
    r.resume_at(per_epoch + 3)
    assert list(r) == stream[per_epoch + 3 :]
    assert list(r) == list(make_sampler(seed=0).plan(2))  # then epoch 2 from its start


def test_no_batches_is_a_clear_error():
    with pytest.raises(ConfigError, match="no training batches"):
        make_sampler(n=3, bs=4)
    with pytest.raises(ConfigError, match="unknown task"):
        make_sampler(weights={"ASR": 1})


def test_dataset_builds_every_task_and_augments_only_inputs(files, tmp_path):
    _, paths, audios = files
    model = FlowOmni(FlowOmniConfig.preset("tiny"))
    entry = ManifestEntry(
        "q",
        str(paths[0]),
        "what is one plus one",
        duration=audios[0].shape[0] / 24000,
        answer_audio=str(paths[1]),
        answer_text="two",
        answer_duration=audios[1].shape[0] / 24000,
        segments=[Segment("what is", None), Segment("one plus one", str(paths[2]))],
    )
    cache = FeatureCache(tmp_path / "c")
    clean = SpeechDataset([entry], model, DataConfig(), cache)
    noisy = SpeechDataset([entry], model, DataConfig(p_augment=1.0), cache)
    items = {t: clean[ItemKey(0, t, 11)] for t in ("A2T", "T2A", "A2A", "T2T", "MIX")}
    assert items["A2A"].sample.target_text == "two" and items["T2T"].sample.prompt_text == entry.text
    assert items["MIX"].sample.segments[0][1] is None and items["MIX"].sample.segments[1][1].shape[1] == 400
    n_a = model.speech_tokenizer.num_tokens(audios[1].shape[0])
    assert items["A2A"].sample.target_speech.shape == (n_a, 400)
    aug = noisy[ItemKey(0, "A2A", 11)]
    assert aug.augment["applied"]  # the input was perturbed ...
    assert not torch.equal(aug.sample.prompt_audio, items["A2A"].sample.prompt_audio)
    assert torch.equal(aug.sample.target_speech, items["A2A"].sample.target_speech)  # ... the target was not
    again = noisy[ItemKey(0, "A2A", 11)]
    assert torch.equal(again.sample.prompt_audio, aug.sample.prompt_audio)  # the item seed fixes the noise
    batch = Collator(model)(list(items.values())).batch
    assert batch.seeds.tolist() == [11] * 5 and batch.text.shape[0] == 5
    model.train()
    out = model(batch)
    assert torch.isfinite(out.loss) and out.num_speech > 0


def test_items_that_cannot_be_read_are_skipped_with_a_line_naming_the_file(files, tmp_path):
    """A file deleted after validation, one too short for the log-mel: the dataset returns a line for
    each, the collator leaves them out (an EmptyBatch when nothing is left), the report keeps each
    line once, appends it to its file, and with on_error stop raises it instead."""
    _, paths, _ = files
    model = FlowOmni(FlowOmniConfig.preset("tiny"))
    gone, short = tmp_path / "gone.wav", tmp_path / "short.wav"
    save_audio(gone, torch.full((4800,), 0.1))
    save_audio(short, torch.full((240,), 0.1))
    entries = [ManifestEntry("ok", str(paths[0]), "fine"), ManifestEntry("gone", str(gone), "x")]
    entries.append(ManifestEntry("short", str(short), "y"))
    ds = SpeechDataset(entries, model, DataConfig(), FeatureCache(tmp_path / "cache"))
    gone.unlink()
    items = [ds[ItemKey(i, "A2T", 1)] for i in range(3)]
    assert items[1] == Skipped(f"entry 'gone': audio file {gone} does not exist")
    assert items[2] == Skipped(
        f"entry 'short': cannot featurise {short}: audio for LogMel: 240 samples is too short; need at least 513"
    )
    collated = Collator(model)(items)
    assert collated.batch.text.shape[0] == 1 and collated.skipped == [items[1].line, items[2].line]
    assert isinstance(Collator(model)(items[1:]).batch, EmptyBatch)

    report = DataReport("skip")
    report.extend(["train.jsonl:3 (id z): transcript 'text' is empty"])  # found by validation
    report.attach(tmp_path / "data_report.txt")
    for line in collated.skipped * 2:  # a bad file is drawn again each epoch
        report.add(line)
    assert (tmp_path / "data_report.txt").read_text().splitlines() == report.lines
    assert len(report) == 3
    resumed = DataReport("skip")
    resumed.extend([report.lines[0]])
    resumed.attach(tmp_path / "data_report.txt", keep_existing=True)  # a resumed run keeps what it met before
    assert resumed.lines == report.lines
    with pytest.raises(AudioError, match=f"entry 'gone': audio file {gone} does not exist"):
        DataReport("stop").add(items[1].line)


def test_t2a_targets_come_from_the_output_voice_and_a2t_inputs_from_the_many(tmp_path):
    from flow_omni.data.corpus import CorpusConfig, build_corpus
    from flow_omni.data.manifest import read_manifest

    cfg = CorpusConfig(
        n_sentences=4,
        n_qa=2,
        n_interleaved=1,
        valid_fraction=0,
        test_fraction=0,
        unseen_fraction=0,
        voices=["en-us+m1", "en+f2", "en-gb-x-rp+klatt"],
        answer_voice="en-us+m3",
    )
    build_corpus(cfg, tmp_path / "c", progress=False)
    entries = read_manifest(tmp_path / "c" / "train.jsonl")
    model = FlowOmni(FlowOmniConfig.preset("tiny"))
    cache = FeatureCache(tmp_path / "cache")
    ds = SpeechDataset(entries, model, DataConfig(), cache)
    tok = model.speech_tokenizer
    sentences = [i for i, e in enumerate(entries) if e.meta["kind"] == "sentence"]
    b = sentences[0]
    a = next(i for i in sentences if entries[i].speaker != entries[b].speaker)  # two sentences, two voices
    ea, eb = entries[a], entries[b]
    assert ea.speaker != eb.speaker and ea.text != eb.text
    for i, e in ((a, ea), (b, eb)):
        assert e.meta["target_speaker"] == "en-us+m3"
        t2a = ds[ItemKey(i, "T2A", 5)].sample
        assert torch.equal(t2a.target_speech, tok.encode_mel(cache.mel(e.target_audio)))  # the one voice ...
        assert t2a.target_speech.shape[0] == tok.num_tokens(round(e.target_duration * 24000))
        a2t = ds[ItemKey(i, "A2T", 5)].sample
        assert torch.equal(a2t.prompt_audio, tok.encode_mel(cache.mel(e.audio)))  # ... the input's own voice
    qa = next(i for i, e in enumerate(entries) if e.meta["kind"] == "qa")
    a2a = ds[ItemKey(qa, "A2A", 5)].sample
    assert torch.equal(a2a.prompt_audio, tok.encode_mel(cache.mel(entries[qa].audio)))
    assert torch.equal(a2a.target_speech, tok.encode_mel(cache.mel(entries[qa].answer_audio)))
    # Length bucketing costs T2A by the target it will produce.
    e = entries[a]
    assert ds.cost(a, "T2A") == len(e.text) + max(len(e.text), e.target_duration * tok.config.token_rate)
    # An entry without target_audio (an imported corpus) still trains T2A on its own audio.
    plain = SpeechDataset(
        [dataclasses.replace(ea, target_audio=None, target_duration=None)], model, DataConfig(), cache
    )
    assert torch.equal(plain[ItemKey(0, "T2A", 5)].sample.target_speech, tok.encode_mel(cache.mel(ea.audio)))
    # The token statistics (and a discrete model's codebooks) are fitted on the output voice too.
    from flow_omni.training.datamodule import FlowOmniDataModule

    dm = FlowOmniDataModule(model, DataConfig(train=[str(tmp_path / "c" / "train.jsonl")], cache_dir=None))
    dm.setup("fit")
    n_target = len({e.target_audio for e in dm.train_entries[:3]})
    mels = list(dm.speech_mels(6))  # the first three sentences: each its own voice, then the output voice
    assert len(mels) == 6 and n_target == 3
    assert torch.equal(mels[1], cache.mel(dm.train_entries[0].target_audio))
    # A codebook is fitted on what the model says alone: the output voice, not the input voices.
    spoken = dm.speech_mels(3, spoken_only=True)
    assert all(torch.equal(m, cache.mel(e.target_audio)) for m, e in zip(spoken, dm.train_entries[:3], strict=True))


def test_feature_masks_zero_bounded_spans_of_inputs_only(files, tmp_path):
    """SpecAugment-style masks: whole frames and whole dimensions set to zero, at most the configured
    width each, the same for the same item seed, on inputs only, and never in validation."""
    import numpy as np

    from flow_omni.data.feature_mask import FeatureMaskConfig, mask_features
    from flow_omni.training.datamodule import _no_augment

    x = torch.randn(200, 50) + 5.0  # no zeros of its own
    cfg = FeatureMaskConfig(time_masks=1, time_width=0.1, channel_masks=1, channel_width=0.2)
    widths = set()
    for seed in range(40):
        y = mask_features(x, cfg, np.random.default_rng(seed))
        zero = y == 0
        frames, dims = zero.all(1), zero.all(0)
        assert torch.equal(zero, frames[:, None] | dims[None, :])  # only whole frames and whole dimensions
        assert frames.sum() <= 20 and dims.sum() <= 10
        assert torch.equal(y[~zero], x[~zero])
        widths.add((int(frames.sum()), int(dims.sum())))
    assert len(widths) > 10  # widths are drawn, not fixed
    assert torch.equal(mask_features(x, cfg, np.random.default_rng(3)), mask_features(x, cfg, np.random.default_rng(3)))
    assert torch.equal(mask_features(x, FeatureMaskConfig(time_masks=0, channel_masks=0), np.random.default_rng(0)), x)
    with pytest.raises(ConfigError, match="time_width"):
        FeatureMaskConfig(time_width=1.5)

    _, paths, audios = files
    model = FlowOmni(FlowOmniConfig.preset("tiny"))
    entry = ManifestEntry("q", str(paths[0]), "one two", duration=audios[0].shape[0] / 24000)
    cache = FeatureCache(tmp_path / "c")
    strong = FeatureMaskConfig(time_masks=2, time_width=0.5, channel_masks=2, channel_width=0.5)
    config = DataConfig(feature_mask=strong)
    masked = SpeechDataset([entry], model, config, cache)
    clean = SpeechDataset([entry], model, DataConfig(), cache)
    a2t, ref = masked[ItemKey(0, "A2T", 7)], clean[ItemKey(0, "A2T", 7)]
    assert a2t.augment["applied"] == ["feature_mask"]
    diff = a2t.sample.prompt_audio != ref.sample.prompt_audio
    assert diff.any() and torch.all(a2t.sample.prompt_audio[diff] == 0)
    assert torch.equal(masked[ItemKey(0, "A2T", 7)].sample.prompt_audio, a2t.sample.prompt_audio)
    t2a = masked[ItemKey(0, "T2A", 7)].sample.target_speech
    assert torch.equal(t2a, clean[ItemKey(0, "T2A", 7)].sample.target_speech)  # targets are not masked
    assert _no_augment(config).feature_mask is None and config.feature_mask is strong  # validation: no masks


def test_word_onsets_reach_the_samples_and_move_with_a_speed_change(files, tmp_path):
    _, paths, audios = files
    model = FlowOmni(FlowOmniConfig.preset("tiny"))
    words = [[0, 0.05], [5, 0.3]]
    entry = ManifestEntry(
        "q", str(paths[0]), "what is", answer_audio=str(paths[1]), answer_text="two", answer_alignment=[[0, 0.04]],
        target_audio=str(paths[3]), target_alignment=words,
    )  # fmt: skip
    cache = FeatureCache(tmp_path / "c")
    clean = SpeechDataset([entry], model, DataConfig(), cache)
    assert clean[ItemKey(0, "T2A", 1)].sample.target_alignment == [(0, 0.05), (5, 0.3)]
    assert clean[ItemKey(0, "A2A", 1)].sample.target_alignment == [(0, 0.04)]
    only_speed = AugmentConfig(p_noise=0.0, p_speed=1.0, p_pitch=0.0, p_reverb=0.0, speed_range=[0.8, 0.8])
    slow = SpeechDataset([entry], model, DataConfig(augment=only_speed, p_augment=1.0, augment_targets=True), cache)
    item = slow[ItemKey(0, "T2A", 1)].sample
    stretch = 1 / 0.8  # speed 0.8: the audio, and every onset in it, lasts 1.25 times as long
    n_clean = model.speech_tokenizer.num_tokens(audios[3].shape[0])
    assert item.target_speech.shape[0] == pytest.approx(n_clean * stretch, abs=2)
    assert [c for c, _ in item.target_alignment] == [0, 5]
    assert [t for _, t in item.target_alignment] == pytest.approx([0.05 * stretch, 0.3 * stretch], rel=0.01)


def test_the_aligned_layout_skips_speech_targets_without_word_onsets(files, tmp_path):
    _, paths, _ = files
    cfg = FlowOmniConfig.preset("tiny")
    cfg.layout = dataclasses.replace(cfg.layout, kind="aligned")
    model, cache = FlowOmni(cfg), FeatureCache(tmp_path / "c")
    entry = ManifestEntry("q", str(paths[0]), "what is", answer_audio=str(paths[1]), answer_text="two")
    aligned = dataclasses.replace(entry, id="a", alignment=[[0, 0.05]], answer_alignment=[[0, 0.05]])
    data = SpeechDataset([entry, aligned], model, DataConfig(), cache)
    for task, field in (("T2A", "alignment"), ("A2A", "answer_alignment")):
        item = data[ItemKey(0, task, 1)]
        assert isinstance(item, Skipped) and f"entry 'q': no {field} (word onsets) for the aligned layout" in item.line
        assert not isinstance(data[ItemKey(1, task, 1)], Skipped)
    assert data[ItemKey(0, "A2T", 1)].sample.target_text == "what is"  # listening needs none
    # a corpus without any onsets is refused up front, unless nothing is spoken
    with pytest.raises(ConfigError, match="none of the 1 manifest entries has them"):
        SpeechDataset([entry], model, DataConfig(), cache)
    SpeechDataset([entry], model, DataConfig(task_weights={"A2T": 1.0}), cache)
