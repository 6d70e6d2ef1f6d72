"""Quantisers fitted on speech tokens: error falls with K and L, codes round-trip, metrics, checkpoints."""

import json

import pytest
import torch

from flow_omni.audio.speech_tokens import ContinuousSpeechTokenizer, SpeechTokenConfig
from flow_omni.audio.synth import synth_corpus
from flow_omni.checkpoint import WEIGHTS_NAME, save_checkpoint
from flow_omni.errors import CheckpointError, ConfigError, MelShapeError
from flow_omni.quantize import (
    KMeansConfig,
    KMeansQuantizer,
    QuantizerError,
    ResidualVQ,
    codebook_usage,
    fit_quantizer,
    load_quantizer,
    perplexity,
    reconstruction_error,
)


@pytest.fixture(scope="module")
def speech():
    """Synthetic speech → fitted tokenizer (r=4, 400-dim tokens), train tokens (N, 400), held-out chunks."""
    tok = ContinuousSpeechTokenizer(SpeechTokenConfig(r=4))
    train = synth_corpus(24, seed=0, duration_range=(1.0, 1.5))
    test = synth_corpus(8, seed=1, duration_range=(1.0, 1.5))
    tok.fit(train)
    return tok, torch.cat([tok.encode(a) for a in train]), [tok.encode(a) for a in test]


@pytest.fixture(scope="module")
def mixture():
    """A 32-component Gaussian mixture in 16 dims: 3000 train rows, 1000 held-out rows."""
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(32, 16, generator=g)
    x = centres[torch.randint(32, (4000,), generator=g)] + 0.3 * torch.randn(4000, 16, generator=g)
    return x[:3000], x[3000:]


def _decreasing(values, factor):
    return all(b < factor * a for a, b in zip(values, values[1:]))


def test_kmeans_error_falls_with_codebook_size_on_speech_tokens(speech):
    tok, train, test = speech
    errs = [
        reconstruction_error(fit_quantizer("kmeans", train, codebook_size=k, progress=False), test, tok)
        for k in (4, 16, 64)
    ]
    assert _decreasing([e.mse for e in errs], 0.8), [e.mse for e in errs]
    assert _decreasing([e.mel_l1 for e in errs], 0.9), [e.mel_l1 for e in errs]
    assert [e.bits_per_token for e in errs] == [2, 4, 6]
    assert all(e.num_tokens == sum(len(t) for t in test) for e in errs)


def test_rvq_error_falls_with_levels_and_prefixes_are_smaller_fits(speech):
    tok, train, test = speech
    rvq = fit_quantizer("rvq", train, codebook_size=16, num_levels=4, progress=False, tokenizer=tok)
    errs = [reconstruction_error(rvq, test, num_levels=n) for n in (1, 2, 4)]  # token space recorded at fit
    assert _decreasing([e.mse for e in errs], 0.8), [e.mse for e in errs]
    assert _decreasing([e.mel_l1 for e in errs], 0.9), [e.mel_l1 for e in errs]
    assert _decreasing(rvq.fit_info["mse"], 1.0)
    # Greedy fitting: the first 2 levels of a 4-level fit ARE the 2-level fit (same seeds).
    rvq2 = ResidualVQ(rvq.config.replace(num_levels=2)).fit(train, progress=False)
    assert torch.equal(rvq2.codebooks, rvq.codebooks[:2])
    assert torch.equal(rvq2.encode(train[:50]), rvq.encode(train[:50])[..., :2])


def test_rvq_with_one_level_is_kmeans(mixture):
    train, test = mixture
    km = KMeansQuantizer(codebook_size=16, dim=16).fit(train, progress=False)
    rvq = ResidualVQ(codebook_size=16, dim=16, num_levels=1).fit(train, progress=False)
    assert torch.equal(km.codebooks, rvq.codebooks)
    assert torch.equal(km.encode(test), rvq.encode(test))


def test_encode_decode_shapes_and_prefix_decode(mixture):
    train, _ = mixture
    rvq = ResidualVQ(dim=16, codebook_size=8, num_levels=3, iterations=5).fit(train, progress=False)
    x = train[:24].reshape(2, 12, 16)
    codes = rvq.encode(x)
    assert codes.shape == (2, 12, 3) and codes.dtype == torch.long
    assert rvq.decode(codes).shape == (2, 12, 16)
    assert rvq.decode(codes[..., :1]).shape == (2, 12, 16)
    assert torch.allclose(rvq.decode(codes[..., :2]), rvq.codebooks[0][codes[..., 0]] + rvq.codebooks[1][codes[..., 1]])
    assert torch.equal(rvq(x), rvq.decode(codes))
    assert rvq.encode(train[0]).shape == (3,)
    assert rvq.encode(train[:0]).shape == (0, 3)
    km = KMeansQuantizer(dim=16, codebook_size=8, iterations=5).fit(train, progress=False)
    assert km.encode(x).shape == (2, 12, 1) and km.num_levels == 1 and km.codebook_size == 8


def test_usage_and_perplexity_hand_checked():
    codes = torch.tensor([0, 0, 1, 1])
    assert float(codebook_usage(codes, 4)) == 0.5
    assert float(perplexity(codes, 4)) == pytest.approx(2.0)
    two_levels = torch.tensor([[0, 3], [1, 3], [2, 3], [3, 3]])  # level 0 uniform, level 1 collapsed
    assert codebook_usage(two_levels, 4).tolist() == [1.0, 0.25]
    assert perplexity(two_levels, 4).tolist() == pytest.approx([4.0, 1.0])
    assert float(perplexity(torch.tensor([0, 0, 0, 1]), 2)) == pytest.approx(2**0.811278124, rel=1e-6)
    with pytest.raises(QuantizerError, match="codebook_size=4"):
        codebook_usage(torch.tensor([0, 4]), 4)


def test_save_load_roundtrip_bit_for_bit_and_dispatch(speech, tmp_path):
    tok, train, test = speech
    rvq = fit_quantizer("rvq", train, codebook_size=8, num_levels=2, iterations=5, progress=False, tokenizer=tok)
    km = fit_quantizer("kmeans", train, codebook_size=8, iterations=5, progress=False)
    rvq.save_pretrained(tmp_path / "rvq")
    km.save_pretrained(tmp_path / "km")
    back = ResidualVQ.from_pretrained(tmp_path / "rvq")
    assert torch.equal(back.encode(test[0]), rvq.encode(test[0]))
    assert torch.equal(back.decode(rvq.encode(test[0])), rvq.decode(rvq.encode(test[0])))
    assert back.config == rvq.config and back.fit_info == rvq.fit_info
    assert back.tokenizer().config.to_dict() == tok.config.to_dict()
    assert isinstance(load_quantizer(tmp_path / "rvq"), ResidualVQ)
    assert isinstance(load_quantizer(tmp_path / "km"), KMeansQuantizer)
    assert torch.equal(load_quantizer(tmp_path / "km").codebooks, km.codebooks)


def test_foreign_truncated_and_unfitted_checkpoints(mixture, tmp_path):
    train, _ = mixture
    km = KMeansQuantizer(dim=16, codebook_size=4, iterations=3).fit(train, progress=False)
    km.save_pretrained(tmp_path / "km")
    with pytest.raises(CheckpointError, match="holds a KMeansQuantizer checkpoint, not a ResidualVQ"):
        ResidualVQ.from_pretrained(tmp_path / "km")
    save_checkpoint(tmp_path / "other", "FlowOmni", {}, {"w": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="FlowOmni checkpoint, not a quantizer"):
        load_quantizer(tmp_path / "other")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not written by flow_omni"):
        load_quantizer(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_quantizer(tmp_path)
    weights = tmp_path / "km" / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_quantizer(tmp_path / "km")
    with pytest.raises(QuantizerError, match="not fitted"):
        KMeansQuantizer(dim=16).save_pretrained(tmp_path / "empty")


def test_shape_range_and_input_errors(mixture):
    train, _ = mixture
    rvq = ResidualVQ(dim=16, codebook_size=8, num_levels=2, iterations=3)
    with pytest.raises(QuantizerError, match="not fitted"):
        rvq.encode(train[:4])
    rvq.fit(train, progress=False)
    with pytest.raises(MelShapeError, match=r"token size 400 .* dim=16"):
        rvq.encode(torch.zeros(5, 400))
    with pytest.raises(MelShapeError, match="NaN"):
        rvq.encode(torch.full((2, 16), float("nan")))
    with pytest.raises(QuantizerError, match=r"values span \[0, 8\] but codebook_size=8"):
        rvq.decode(torch.tensor([[0, 8]]))
    with pytest.raises(QuantizerError, match="3 level"):
        rvq.decode(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(QuantizerError, match="integer"):
        rvq.decode(torch.zeros(4, 2))
    with pytest.raises(MelShapeError, match="tokens chunk 1"):
        ResidualVQ(dim=16, codebook_size=4).fit([train[:10], torch.zeros(3, 15)], progress=False)
    with pytest.raises(QuantizerError, match="at least codebook_size=64"):
        KMeansQuantizer(dim=16, codebook_size=64).fit(train[:10], progress=False)
    with pytest.raises(ConfigError, match="num_levels"):
        fit_quantizer("kmeans", train, num_levels=2)
    with pytest.raises(ConfigError, match="kind"):
        fit_quantizer("pq", train)
    with pytest.raises(ConfigError, match="dim=16 but token_space"):
        KMeansConfig(dim=16, token_space=SpeechTokenConfig(r=1))


def test_token_space_mismatch_and_mel_error_by_hand(speech):
    tok, train, test = speech
    km = fit_quantizer("kmeans", train, codebook_size=8, iterations=5, progress=False, tokenizer=tok)
    err = reconstruction_error(km, test[0])
    by_hand = (tok.decode(km(test[0])) - tok.decode(test[0])).abs().mean()
    assert err.mel_l1 == pytest.approx(float(by_hand), rel=1e-5)
    assert err.bitrate == pytest.approx(3 * 93.75 / 4)
    other = ContinuousSpeechTokenizer(SpeechTokenConfig(r=4))  # identity stats: another token space
    with pytest.raises(ConfigError, match="different token space"):
        reconstruction_error(km, test[0], other)
    assert (
        reconstruction_error(
            fit_quantizer("kmeans", train, codebook_size=8, iterations=2, progress=False), test[0]
        ).mel_l1
        is None
    )


def test_determinism_iterable_input_and_subsampling(mixture):
    train, _ = mixture
    a = KMeansQuantizer(dim=16, codebook_size=16, seed=3).fit(train, progress=False)
    b = KMeansQuantizer(dim=16, codebook_size=16, seed=3).fit(train.split(700), progress=False)
    c = KMeansQuantizer(dim=16, codebook_size=16, seed=4).fit(train, progress=False)
    assert torch.equal(a.codebooks, b.codebooks)
    assert not torch.equal(a.codebooks, c.codebooks)
    gen = (chunk for chunk in train.split(500))
    sub = fit_quantizer("kmeans", gen, codebook_size=16, max_tokens=1000, progress=False)
    assert sub.dim == 16 and int(sub.fitted_tokens) == 1000 == sub.fit_info["tokens"]


def test_minibatch_close_to_lloyd_and_dead_codewords_reseeded(mixture):
    train, test = mixture
    lloyd = reconstruction_error(fit_quantizer("kmeans", train, codebook_size=32, progress=False), test).mse
    mini = fit_quantizer("kmeans", train, codebook_size=32, batch_size=256, iterations=10, progress=False)
    assert reconstruction_error(mini, test).mse < 1.5 * lloyd
    # 1000 identical points + 3 tight far clusters; random init puts most codewords on the pile.
    g = torch.Generator().manual_seed(0)
    far = torch.tensor([[20.0] * 4, [-20.0] * 4, [20.0, -20.0, 20.0, -20.0]])
    x = torch.cat([torch.zeros(1000, 4), far.repeat_interleave(8, 0) + 0.01 * torch.randn(24, 4, generator=g)])
    km = KMeansQuantizer(dim=4, codebook_size=4, init="random").fit(x, progress=False)
    assert km.fit_info["reseeded"][0] >= 1
    assert km.fit_info["mse"][0] < 1e-3
    assert float(codebook_usage(km.encode(x)[..., 0], 4)) == 1.0
    # Fewer distinct points than codewords: exact fit, idle codewords are left alone, early stop.
    few = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]).repeat(4, 1)
    km = KMeansQuantizer(dim=2, codebook_size=5).fit(few, progress=False)
    assert km.fit_info["mse"] == [0.0] and km.fit_info["iterations"][0] <= 3
    assert torch.equal(km(few), few)


def test_progress_bar(mixture, capsys):
    train, _ = mixture
    ResidualVQ(dim=16, codebook_size=4, num_levels=2, iterations=2, tol=0).fit(train, progress=True)
    assert "RVQ L=2 K=4" in capsys.readouterr().err
