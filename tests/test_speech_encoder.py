"""Speech-input encoders (conv over speech tokens, Whisper) + MLP adapters, on tiny random models."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import harmonic_tone
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from flow_omni.audio.io import resample
from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer
from flow_omni.errors import AudioError, CheckpointError, ConfigError, FlowOmniError, MelShapeError
from flow_omni.models.speech_encoder import SpeechEncoder, SpeechEncoderConfig, build_speech_encoder

WIDTH = 48
CONV = dict(kind="conv", channels=32, conv_layers=2, kernel_size=5, transformer_layers=1, heads=4)
WHISPER = dict(kind="whisper", whisper_d_model=64, whisper_layers=1, whisper_heads=4, whisper_max_seconds=4.0)
KINDS = {"conv": CONV, "whisper": WHISPER}


@pytest.fixture(scope="module")
def tok():
    return ContinuousSpeechTokenizer()


def make(kind: str, tok, seed: int = 0, **over) -> SpeechEncoder:
    torch.manual_seed(seed)
    return SpeechEncoder(SpeechEncoderConfig(**{**KINDS[kind], **over}), tok.token_dim, WIDTH)


def padded_batch(feats, fill: float = 7.0):
    """Pad with a loud garbage value so that any leak of padding shows up."""
    lengths = torch.tensor([0 if f is None else f.shape[0] for f in feats])
    C = next(f for f in feats if f is not None).shape[1]
    x = torch.full((len(feats), int(lengths.max()), C), fill)
    for i, f in enumerate(feats):
        if f is not None:
            x[i, : f.shape[0]] = f
    return x, lengths


@pytest.mark.parametrize("kind", ["conv", "whisper"])
def test_shapes_batching_and_padding(kind, tok):
    enc = make(kind, tok)
    clips = [harmonic_tone(s, seed=i, f0=110 + 40 * i) for i, s in enumerate([1.0, 0.37, 1.63])]
    feats = [enc.featurize(a, tok) for a in clips]
    assert all(f.shape[1] == enc.feature_dim for f in feats)
    x, lengths = padded_batch([feats[0], None, feats[1], feats[2]])  # an item without audio too
    for train in (True, False):
        enc.train(train)
        emb, out_len = enc(x, lengths)
        assert emb.shape == (4, enc.output_length(x.shape[1]), WIDTH)
        assert out_len.tolist() == [enc.output_length(int(n)) for n in lengths]
        assert out_len[1] == 0 and out_len.max() == emb.shape[1]
        for i, n in enumerate(out_len.tolist()):
            assert torch.all(emb[i, n:] == 0)
            if n:
                single, single_len = enc(x[i : i + 1, : lengths[i]], lengths[i : i + 1])
                assert single_len.item() == n and single.shape[1] == n
                torch.testing.assert_close(single[0], emb[i, :n], atol=1e-5, rtol=0)
    if kind == "conv":
        assert enc.output_length(37) == 37
    else:  # 100 Hz mels → 50 Hz → stacked by 4
        assert enc.output_length(100) == 13 and enc.output_length(1) == 1 and enc.output_length(0) == 0
        assert enc.output_length(400) == 50


def test_conv_features_are_the_speech_tokens(tok):
    audio = harmonic_tone(0.8)
    torch.testing.assert_close(make("conv", tok).featurize(audio, tok), tok.encode(audio))


def test_whisper_features_match_feature_extractor(tok):
    enc = make("whisper", tok)
    audio = harmonic_tone(1.37, seed=2)
    feats = enc.featurize(audio, tok)
    x16 = resample(audio, 24000, 16000)
    assert feats.shape == (math.ceil(x16.shape[0] / 160), 80)
    ref = WhisperFeatureExtractor(feature_size=80)(x16.numpy(), sampling_rate=16000, return_tensors="pt")
    torch.testing.assert_close(feats, ref.input_features[0, :, : feats.shape[0]].T, atol=1e-5, rtol=0)


def test_too_long_audio_is_rejected(tok):
    enc = make("whisper", tok)
    assert enc.max_seconds == pytest.approx(4.0)
    assert enc.featurize(harmonic_tone(4.0), tok).shape == (400, 80)  # exactly the window is fine
    with pytest.raises(AudioError, match=r"4\.20 s long .* at most 4\.00 s"):
        enc.featurize(harmonic_tone(4.2), tok)
    with pytest.raises(MelShapeError, match="at most 400"):
        enc(torch.zeros(1, 401, 80), torch.tensor([401]))
    with pytest.raises(AudioError, match="NaN"):
        enc.featurize(torch.full((2400,), float("nan")), tok)
    with pytest.raises(MelShapeError):
        enc(torch.zeros(1, 10, 400), torch.tensor([10]))  # conv features given to whisper


def tiny_whisper(max_source_positions: int = 150) -> WhisperModel:
    torch.manual_seed(1)
    cfg = WhisperConfig(
        d_model=64,
        encoder_layers=1,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=max_source_positions,
        max_target_positions=16,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return WhisperModel(cfg).eval()


def test_local_pretrained_whisper_and_checkpoint_rebuild(tok, tmp_path):
    model = tiny_whisper()
    model.save_pretrained(tmp_path / "full")
    model.encoder.save_pretrained(tmp_path / "encoder_only")
    cfg = SpeechEncoderConfig(kind="whisper", whisper_path=str(tmp_path / "full"), downsample=2)
    enc = SpeechEncoder(cfg, tok.token_dim, WIDTH).eval()
    assert enc.max_seconds == pytest.approx(3.0)  # 150 positions, not whisper_max_seconds
    mel = torch.randn(2, 80, 300)
    with torch.no_grad():
        ref = model.encoder(mel).last_hidden_state
        assert torch.equal(enc.body.encoder(mel).last_hidden_state, ref)
        only = SpeechEncoder(cfg.replace(whisper_path=str(tmp_path / "encoder_only")), tok.token_dim, WIDTH)
        assert torch.equal(only.eval().body.encoder(mel).last_hidden_state, ref)

    # The architecture is recorded, so a checkpoint rebuilds without the pretrained directory.
    assert enc.config.whisper_config["max_source_positions"] == 150
    assert cfg.whisper_config == {}  # recorded in the encoder's own config, not the caller's
    restored = SpeechEncoderConfig.from_json(enc.config.to_json())
    (tmp_path / "full" / "model.safetensors").unlink()
    again = SpeechEncoder(restored, tok.token_dim, WIDTH, from_checkpoint=True)
    again.load_state_dict(enc.state_dict())
    feats = enc.featurize(harmonic_tone(1.1), tok)
    x, lengths = feats[None], torch.tensor([feats.shape[0]])
    with torch.no_grad():
        assert torch.equal(again.eval()(x, lengths)[0], enc(x, lengths)[0])


def test_bad_whisper_paths(tok, tmp_path):
    with pytest.raises(CheckpointError, match="could not load a Whisper"):
        SpeechEncoder(SpeechEncoderConfig(kind="whisper", whisper_path=str(tmp_path / "nope")), tok.token_dim, WIDTH)


def test_config_validation():
    with pytest.raises(ConfigError, match="did you mean 'channels'"):
        SpeechEncoderConfig.from_dict({"kind": "conv", "channel": 64})
    with pytest.raises(ConfigError, match="kind"):
        SpeechEncoderConfig.from_dict({"kind": "hubert"})
    with pytest.raises(ConfigError, match="odd"):
        SpeechEncoderConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="divisible"):
        SpeechEncoderConfig(channels=30, heads=4)
    with pytest.raises(ConfigError, match="whisper_max_seconds"):
        SpeechEncoderConfig(kind="whisper", whisper_max_seconds=0.0)
    with pytest.raises(ConfigError, match="downsample"):
        SpeechEncoderConfig(downsample=0)
    cfg = SpeechEncoderConfig(**WHISPER)
    assert SpeechEncoderConfig.from_yaml(cfg.to_yaml()) == cfg


@pytest.mark.parametrize("kind", ["conv", "whisper"])
def test_gradients_reach_every_trainable_parameter(kind, tok):
    enc = build_speech_encoder(SpeechEncoderConfig(**KINDS[kind], adapter_hidden=24), tok.token_dim, WIDTH)
    assert enc.adapter[0].out_features == 24
    feats = [enc.featurize(harmonic_tone(s, seed=i), tok) for i, s in enumerate([0.9, 0.5])]
    x, lengths = padded_batch(feats)
    emb, _ = enc(x, lengths)
    (emb * torch.randn_like(emb)).sum().backward()
    trainable = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing

    enc.freeze_encoder()
    assert {n.split(".")[0] for n, p in enc.named_parameters() if p.requires_grad} == {"adapter"}


def test_output_norm_puts_audio_on_the_embeddings_scale(tok):
    """With ``output_norm`` every valid adapter output starts with an RMS of 0.02 (the text embeddings'
    init scale), padding stays zero, and the feature cache key does not depend on the adapter."""
    clip = harmonic_tone(1.0)
    plain, normed = make("whisper", tok), make("whisper", tok, output_norm=True)
    x, lengths = padded_batch([plain.featurize(clip, tok), None])
    rms = {}
    for name, enc in (("plain", plain), ("normed", normed)):
        emb, out_len = enc(x, lengths)
        rms[name] = emb[0, : out_len[0]].pow(2).mean(-1).sqrt()
        assert torch.all(emb[1] == 0)
    torch.testing.assert_close(rms["normed"], torch.full_like(rms["normed"], 0.02), atol=1e-4, rtol=0)
    assert rms["plain"].mean() > 2 * 0.02
    assert plain.feature_spec() == normed.feature_spec()
    assert plain.feature_spec() != make("whisper", tok, whisper_layers=2).feature_spec()


def test_discrete_input_units_code_the_stacked_frozen_features(tok):
    """``input_units``: each stacked frame becomes the nearest of K centroids fitted on training inputs,
    read through an embedding table; batching and padding behave as with the adapter; the cache key of
    the features is the continuous model's (the units are computed after it)."""
    units = make("whisper", tok, frozen=True, downsample=2, input_units=6, units_fit_max=0)
    plain = make("whisper", tok, frozen=True, downsample=2)
    assert units.feature_spec() == plain.feature_spec()
    clips = [harmonic_tone(s, seed=i, f0=110 + 60 * i) for i, s in enumerate([1.0, 0.45, 1.3])]
    feats = [units.featurize(c, tok) for c in clips]
    assert units.needs_fit and not plain.needs_fit
    x, lengths = padded_batch(feats[:2])
    with pytest.raises(FlowOmniError, match="never fitted"):
        units(x, lengths)
    units.fit_units(iter(feats))  # any iterable, streamed
    assert not units.needs_fit and int(units.units.fitted_tokens) == sum(-(-f.shape[0] // 2) for f in feats)

    x, lengths = padded_batch([feats[0], None, feats[1]])
    emb, out_len = units(x, lengths)
    codebook = units.units.codebooks[0]
    for i, f in ((0, feats[0]), (2, feats[1])):
        n = int(out_len[i])
        stacked = F.pad(f, (0, 0, 0, (-f.shape[0]) % 2)).reshape(-1, 2 * f.shape[1])
        assert n == stacked.shape[0]
        codes = torch.cdist(stacked, codebook).argmin(-1)
        torch.testing.assert_close(emb[i, :n], units.adapter.weight[codes])
        assert torch.all(emb[i, n:] == 0)
        single, _ = units(f[None], torch.tensor([f.shape[0]]))
        torch.testing.assert_close(single[0], emb[i, :n])
    assert torch.all(emb[1] == 0) and int(out_len[1]) == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16-mixed training codes as evaluation does
        torch.testing.assert_close(units(x, lengths)[0], emb, atol=0, rtol=0)
    # Different clips are coded apart: the units carry what was said, not one code for everything.
    assert len(emb[0, : out_len[0]].unique(dim=0)) > 1

    # The codebook is state: a model rebuilt from the config and the state dict codes the same way.
    again = make("whisper", tok, seed=1, frozen=True, downsample=2, input_units=6, units_fit_max=0)
    assert again.needs_fit
    again.load_state_dict(units.state_dict())
    assert not again.needs_fit
    torch.testing.assert_close(again(x, lengths)[0], emb)


def test_discrete_input_units_config_errors(tok):
    with pytest.raises(ConfigError, match="input_units needs a frozen Whisper"):
        SpeechEncoderConfig(**WHISPER, input_units=8)
    with pytest.raises(ConfigError, match="units_fit_max=4 keeps fewer frames"):
        SpeechEncoderConfig(**WHISPER, frozen=True, input_units=8, units_fit_max=4)
    with pytest.raises(ConfigError, match="input_units is 0"):
        make("whisper", tok, frozen=True).fit_units([torch.zeros(4, 64)])
