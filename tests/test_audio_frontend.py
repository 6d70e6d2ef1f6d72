"""Audio I/O, the Vocos log-mel, per-bin normalisation and r-frame token grouping."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import harmonic_tone
from vocos.feature_extractors import MelSpectrogramFeatures

from flow_omni.audio import (
    LOG_MEL_FLOOR,
    LogMel,
    MelConfig,
    MelNormalizer,
    MelStats,
    fit_mel_stats,
    group_frames,
    load_audio,
    num_tokens,
    save_audio,
    ungroup_frames,
    validate_audio,
)
from flow_omni.errors import AudioError, ConfigError, MelShapeError


def test_mel_equals_vocos_extractor(tone):
    ours = LogMel()(tone)
    ref = MelSpectrogramFeatures(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100, padding="center")(tone)
    assert ours.shape == (100, tone.shape[0] // 256 + 1)
    assert torch.equal(ours, ref)
    # Batched input gives the same frames as one item at a time.
    batch = torch.stack([tone, harmonic_tone(seed=3)])
    assert torch.equal(LogMel()(batch)[0], ours)


def test_mel_floor_and_frame_rate():
    cfg = MelConfig()
    assert cfg.frame_rate == pytest.approx(93.75)
    assert cfg.num_frames(24000) == 94
    mel = LogMel()(torch.zeros(4800) + 1e-12)
    assert mel.min() >= LOG_MEL_FLOOR - 1e-6


def test_load_16k_stereo_gives_24k_mono(tmp_path):
    sr = 16000
    left = harmonic_tone(0.75, sr=sr, f0=200.0).numpy()
    right = harmonic_tone(0.75, sr=sr, f0=300.0, seed=1).numpy()
    path = tmp_path / "stereo16k.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    audio = load_audio(path)
    assert audio.dim() == 1 and audio.dtype == torch.float32
    assert audio.shape[0] == int(0.75 * 24000)
    # The mix-down is the channel mean: check it at the 16 kHz rate before resampling.
    native = load_audio(path, sample_rate=sr)
    assert torch.allclose(native, torch.from_numpy((left + right) / 2), atol=1e-6)
    stereo = load_audio(path, mono=False)
    assert stereo.shape == (2, int(0.75 * 24000))


def test_save_load_roundtrip(tmp_path, tone):
    path = save_audio(tmp_path / "x.wav", tone)
    back = load_audio(path)
    assert back.shape == tone.shape
    assert (back - tone).abs().max() < 1e-4  # 16-bit PCM quantisation


@pytest.mark.parametrize(
    "audio, match",
    [
        (torch.zeros(0), "empty"),
        (torch.tensor([0.1, float("nan"), 0.2]), "NaN/Inf"),
        (torch.tensor([0.1, float("inf")]), "NaN/Inf"),
        (torch.zeros(2, 3, 4), "expected shape"),
        (torch.zeros(10, dtype=torch.int16), "floating-point"),
    ],
)
def test_bad_audio_errors(audio, match):
    with pytest.raises(AudioError, match=match):
        validate_audio(audio)


def test_silent_and_overlong_audio_errors():
    with pytest.raises(AudioError, match="silent"):
        validate_audio(torch.zeros(100), allow_silent=False)
    with pytest.raises(AudioError, match="limit is 1.00 s"):
        validate_audio(torch.ones(48000) * 0.1, sample_rate=24000, max_seconds=1.0)


def test_unsupported_and_missing_files(tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio")
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(bogus)
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 24000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)


@pytest.mark.parametrize("fmt", ["WAV", "AIFF", "AU"])
def test_a_truncated_file_is_refused_not_read_in_part(tmp_path, tone, fmt):
    """A file cut short keeps its header; soundfile would silently read the part that is left."""
    whole = tmp_path / f"whole.{fmt.lower()}"
    sf.write(whole, tone.numpy(), 24000, format=fmt, subtype="PCM_16")
    assert load_audio(whole).shape == tone.shape
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    assert len(sf.read(cut)[0]) < len(tone)  # what soundfile alone does
    with pytest.raises(AudioError, match=f"{cut} is truncated: its header declares"):
        load_audio(cut)


def test_a_cut_flac_is_a_decode_error_naming_the_file(tmp_path, tone):
    whole = tmp_path / "whole.flac"
    sf.write(whole, tone.numpy(), 24000)
    data = whole.read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cannot decode .*cut\.flac .*truncated or corrupt"):
        load_audio(tmp_path / "cut.flac")


def test_mel_wrong_bins_error(tone):
    stats = MelStats.identity(100)
    with pytest.raises(MelShapeError, match="80 mel bins.*expected 100"):
        MelNormalizer(stats).normalize(torch.zeros(80, 12))
    with pytest.raises(MelShapeError, match="too short"):
        LogMel()(torch.ones(100) * 0.1)


def test_normalisation_stats_and_inverse(tone):
    logmel = LogMel()
    mels = [logmel(harmonic_tone(0.5 + 0.1 * i, seed=i, f0=100 + 20 * i)) for i in range(4)]
    stats = fit_mel_stats(mels)
    allframes = torch.cat(mels, dim=-1).double()
    assert np.allclose(stats.mean, allframes.mean(-1).numpy(), atol=1e-9)
    assert np.allclose(stats.std, allframes.std(-1).clamp_min(1e-3).numpy(), atol=1e-9)
    # Fitting in one pass or in chunks gives the same statistics.
    assert np.allclose(fit_mel_stats([torch.cat(mels, -1)]).mean, stats.mean, atol=1e-9)
    norm = MelNormalizer(stats)
    z = norm.normalize(mels[0])
    assert torch.allclose(torch.cat([norm.normalize(m) for m in mels], -1).mean(-1), torch.zeros(100), atol=1e-4)
    back = norm.denormalize(z)
    assert torch.allclose(back, mels[0], rtol=0, atol=2e-6)
    # Stats survive a JSON round-trip exactly (they live in the checkpoint config).
    assert MelStats.from_json(stats.to_json()) == stats


@pytest.mark.parametrize("r", [1, 2, 3, 4, 7])
def test_group_ungroup_exact(r):
    mel = torch.randn(2, 100, 29)
    tokens = group_frames(mel, r, pad_value=LOG_MEL_FLOOR)
    assert tokens.shape == (2, num_tokens(29, r), r * 100)
    # Token k holds frames k*r .. k*r+r-1, each frame's bins contiguous.
    assert torch.equal(tokens[:, 0, :100], mel[:, :, 0])
    if r > 1:
        assert torch.equal(tokens[:, 0, 100:200], mel[:, :, 1])
    back = ungroup_frames(tokens, r, num_frames=29)
    assert torch.equal(back, mel)
    # The padded tail holds the pad value (silence), so ungrouping without cropping decodes to silence.
    full = ungroup_frames(tokens, r)
    assert torch.all(full[..., 29:] == LOG_MEL_FLOOR)
    # Unbatched input works the same.
    assert torch.equal(ungroup_frames(group_frames(mel[0], r), r, num_frames=29), mel[0])


def test_group_tail_modes():
    mel = torch.randn(100, 10)
    assert group_frames(mel, 4, tail="drop").shape == (2, 400)
    with pytest.raises(MelShapeError, match="not a multiple"):
        group_frames(mel, 4, tail="error")
    with pytest.raises(MelShapeError, match="no complete token"):
        group_frames(torch.randn(100, 3), 4, tail="drop")
    with pytest.raises(MelShapeError, match="not a multiple of r=3"):
        ungroup_frames(torch.randn(5, 400), 3)


def test_config_unknown_key_is_specific():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'n_mel' \(did you mean 'n_mels'\?\)"):
        MelConfig.from_dict({"n_mel": 80})
    with pytest.raises(ConfigError, match="expected an integer"):
        MelConfig.from_dict({"n_mels": "eighty"})
    assert MelConfig.from_yaml(MelConfig(n_mels=80).to_yaml()) == MelConfig(n_mels=80)


def test_continuous_tokenizer_roundtrip_and_silent_tail():
    from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer, SpeechTokenConfig

    tok = ContinuousSpeechTokenizer(SpeechTokenConfig(r=4))
    audios = [harmonic_tone(0.6, seed=i, f0=120 + 30 * i) for i in range(3)]
    stats = tok.fit(audios)
    assert stats.count > 0 and tok.config.stats == stats
    mel = tok.mel(audios[0])  # 57 frames: not a multiple of 4
    assert mel.shape[-1] % 4 != 0
    tokens = tok.encode(audios[0])
    assert tokens.shape == (tok.num_tokens(audios[0].shape[0]), 400)
    assert torch.allclose(tok.decode(tokens, num_frames=mel.shape[-1]), mel, atol=2e-5)
    # Padded tail frames decode to exact silence in every bin.
    tail = tok.decode(tokens)[:, mel.shape[-1] :]
    assert torch.allclose(tail, torch.full_like(tail, LOG_MEL_FLOOR), atol=2e-5)
    assert torch.allclose(tok.decode(tok.silence_token()[None]), torch.full((100, 4), LOG_MEL_FLOOR), atol=2e-5)
    with pytest.raises(MelShapeError, match="r=4 x 100 bins = 400"):
        tok.decode(torch.zeros(3, 200))
    with pytest.raises(ConfigError, match="stats have 80 bins"):
        SpeechTokenConfig(stats=MelStats.identity(80))


def test_decoded_tokens_stay_in_the_range_audio_can_produce():
    """A runaway generation (log-mel 1117 was seen) must not reach a vocoder as inf after exp."""
    from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer, SpeechTokenConfig

    tok = ContinuousSpeechTokenizer(SpeechTokenConfig(r=4))
    ceiling = tok.logmel.ceiling()
    t = torch.arange(24000) / 24000
    loud = [
        torch.sign(torch.randn(24000, generator=torch.Generator().manual_seed(0))),
        torch.sin(2 * torch.pi * 3000 * t),
        torch.ones(24000),
    ]
    for audio in loud:  # full-scale signals stay under the bound, so clamping never alters real audio
        assert float(tok.mel(audio).max()) < ceiling
    mel = tok.decode(torch.randn(6, 400) * 1e4)
    assert float(mel.max()) == pytest.approx(ceiling) and float(mel.min()) == pytest.approx(LOG_MEL_FLOOR)
    assert np.isfinite(np.exp(mel.double().numpy())).all()
