"""Export a CTranslate2 Whisper folder back to a transformers checkpoint (the inverse of ``models convert``).

CTranslate2 has no converter in this direction, so this module reads ``model.bin``
itself (the layout ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes:
a version, the spec name and revision, then named, typed, shaped arrays and
aliases), undoes what the converter did (fused q/k/v and k/v projections, int8 or
int16 per-row quantisation, float16/bfloat16 storage, the projection aliased to
the embeddings) and saves a ``WhisperForConditionalGeneration`` (safetensors)
with its ``WhisperProcessor`` and a ``generation_config.json`` rebuilt from the
tokenizer's special tokens and the CTranslate2 ``config.json``.

The result can be fine-tuned (``finetuning/train.py --base_model DIR``) and
converted back with ``whispersg models convert``.  Needs the ``[finetune]`` extra.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from whispersg.errors import ModelError, missing_extra
from whispersg.models import PREPROCESSOR_FILE, TOKENIZER_FILE, check_model_folder

EXPORT_MARKER = "whispersg_export.json"  # marks a folder an export of ours wrote (replaced only with --force)
ENGLISH_ONLY_VOCAB_SIZE = 51864  # multilingual vocabularies have 51865 (51866 from large-v3 on)
WHISPER_SPEC = "WhisperSpec"
# The binary layout read here is versions 4-6 (typed variables); CTranslate2 >= 2.0 writes these.
SUPPORTED_BINARY_VERSIONS = range(4, 7)
# Type ids in the order of CTranslate2's DataType enum (model_spec._dtype_to_type_id).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
                 "float16": np.float16, "bfloat16": np.uint16}
_TASK_TOKENS = {"transcribe": "<|transcribe|>", "translate": "<|translate|>"}


# ---------------------------------------------------------------- model.bin reader


@dataclass
class CT2Model:
    """The variables of a CTranslate2 ``model.bin``: arrays as stored (aliases resolved) and their types."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def raw(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def scalar(self, name: str):
        return self.raw(name).reshape(-1)[0].item()

    def float32(self, name: str) -> np.ndarray:
        """A weight as float32: int8/int16 divided by its ``<name>_scale``, float16/bfloat16 widened."""
        stored = self.aliases.get(name, name)
        value = self.variables[stored]
        dtype = self.dtypes[stored]
        if stored.endswith("weight") and self.has(stored + "_zero"):
            raise ModelError(f"{stored}: AWQ-quantised weights (with zero points) cannot be exported; "
                             "export a float16, int8 or float32 model")
        if dtype == "bfloat16":
            return (value.astype(np.uint32) << 16).view(np.float32)
        if dtype in ("int8", "int16"):
            if not self.has(stored + "_scale"):
                raise ModelError(f"{stored}: an {dtype} weight without its scale; the model.bin is incomplete")
            scale = self.float32(stored + "_scale")
            # int8 scales are per output row (conv weights too); int16 uses one scale per matrix.
            scale = scale.reshape((-1,) + (1,) * (value.ndim - 1)) if scale.size > 1 else scale.reshape(())
            return (value.astype(np.float32) / scale).astype(np.float32)
        return value.astype(np.float32)


def read_ct2_model(path: str | Path) -> CT2Model:
    """Read a CTranslate2 ``model.bin`` (memory-mapped, so a large model is not copied into memory twice)."""
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: cannot be read ({error}); re-download or re-convert the model") from error
    reader = _Reader(data, path)
    version = reader.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelError(f"{path}: CTranslate2 binary version {version} is not supported (versions "
                         f"{SUPPORTED_BINARY_VERSIONS.start}-{SUPPORTED_BINARY_VERSIONS.stop - 1}); "
                         "re-convert the model with a current ctranslate2")
    spec = reader.string()
    revision = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        rank = reader.unpack("B")
        shape = tuple(reader.unpack("I") for _ in range(rank))
        type_id = reader.unpack("B")
        if type_id >= len(_DTYPES):
            raise ModelError(f"{path}: variable {name} has unknown type id {type_id}; the file is not a model.bin "
                             "this version can read")
        dtype = _DTYPES[type_id]
        size = reader.unpack("I")
        array = reader.take(size).view(_NUMPY_DTYPES[dtype])
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise ModelError(f"{path}: variable {name} holds {array.size} values for shape {shape}; the file is damaged")
        variables[name] = array.reshape(shape)
        dtypes[name] = dtype
    aliases = {}
    for _ in range(reader.unpack("I")):
        alias = reader.string()
        aliases[alias] = reader.string()
    return CT2Model(spec, revision, variables, dtypes, aliases)


class _Reader:
    def __init__(self, data: np.ndarray, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def take(self, count: int) -> np.ndarray:
        if self.offset + count > len(self.data):
            raise ModelError(f"{self.path}: ends early (truncated at byte {len(self.data)}); re-download or re-convert")
        chunk = self.data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)).tobytes())[0]

    def string(self) -> str:
        length = self.unpack("H")
        return self.take(length).tobytes()[:-1].decode("utf-8")  # stored with a trailing NUL


# ---------------------------------------------------------------- special tokens


@dataclass(frozen=True)
class WhisperTokens:
    """Whisper's special token ids, read from a tokenizer's added tokens (English-only or multilingual layout)."""

    multilingual: bool
    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_prev: int
    no_timestamps: int
    languages: dict[str, int]  # "<|en|>" -> id

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1


def whisper_tokens(added_tokens: dict[str, int], vocab_size: int) -> WhisperTokens:
    """The special ids of a Whisper vocabulary: ``added_tokens`` maps token text to id (tokenizer.json's list)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    required = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startofprev|>",
                "<|notimestamps|>")
    missing = [token for token in required if token not in added_tokens]
    if missing:
        raise ModelError(f"the tokenizer lacks Whisper's special tokens {', '.join(missing)}; "
                         "copy tokenizer.json from the model the CTranslate2 folder was converted from")
    languages = {f"<|{code}|>": added_tokens[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in added_tokens}
    return WhisperTokens(
        multilingual=vocab_size != ENGLISH_ONLY_VOCAB_SIZE,
        eot=added_tokens["<|endoftext|>"],
        sot=added_tokens["<|startoftranscript|>"],
        translate=added_tokens["<|translate|>"],
        transcribe=added_tokens["<|transcribe|>"],
        sot_prev=added_tokens["<|startofprev|>"],
        no_timestamps=added_tokens["<|notimestamps|>"],
        languages=dict(sorted(languages.items(), key=lambda item: item[1])),
    )


def generation_settings(tokens: WhisperTokens, ct2_config: dict, max_length: int) -> dict:
    """``generation_config.json`` fields, as OpenAI's checkpoints on the hub carry them.

    English-only models get no ``lang_to_id``: transformers would then detect a
    language and put a language token into a prompt that .en models never saw.
    """
    settings: dict[str, Any] = {
        "bos_token_id": tokens.eot,  # the tokenizer's bos token; Whisper starts decoding at decoder_start_token_id
        "decoder_start_token_id": tokens.sot,
        "eos_token_id": tokens.eot,
        "pad_token_id": tokens.eot,
        "is_multilingual": tokens.multilingual,
        "no_timestamps_token_id": tokens.no_timestamps,
        "prev_sot_token_id": tokens.sot_prev,
        "max_initial_timestamp_index": 50,  # Whisper's 1 s limit on the first timestamp (0.02 s steps)
        "max_length": max_length,
        "return_timestamps": False,
        "suppress_tokens": list(ct2_config.get("suppress_ids") or []),
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin") or [220, tokens.eot]),
    }
    if ct2_config.get("alignment_heads"):
        settings["alignment_heads"] = [list(head) for head in ct2_config["alignment_heads"]]
    if tokens.multilingual:
        settings["lang_to_id"] = dict(tokens.languages)
        settings["task_to_id"] = {"transcribe": tokens.transcribe, "translate": tokens.translate}
        settings["forced_decoder_ids"] = [[1, None], [2, tokens.transcribe]]
    else:
        settings["forced_decoder_ids"] = [[1, tokens.no_timestamps]]
    return settings


# ---------------------------------------------------------------- weights


def _encoder_layers(model: CT2Model, prefix: str) -> int:
    count = 0
    while model.has(f"{prefix}/layer_{count}/ffn/linear_0/weight"):
        count += 1
    return count


def _linear(model: CT2Model, name: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    bias = model.float32(f"{name}/bias") if model.has(f"{name}/bias") else None
    return model.float32(f"{name}/weight"), bias


def _put_linear(state: dict, target: str, weight: np.ndarray, bias: Optional[np.ndarray], with_bias: bool = True):
    state[f"{target}.weight"] = weight
    if with_bias:
        state[f"{target}.bias"] = bias if bias is not None else np.zeros(weight.shape[0], np.float32)


def _put_norm(state: dict, model: CT2Model, source: str, target: str):
    state[f"{target}.weight"] = model.float32(f"{source}/gamma")
    state[f"{target}.bias"] = model.float32(f"{source}/beta")


def _split_attention(state: dict, model: CT2Model, source: str, target: str, cross: bool):
    """Undo the converter's fusion: self-attention stores q|k|v in linear_0, cross-attention q in linear_0, k|v in linear_1.

    Whisper's k_proj has no bias (the converter stored zeros for it), so the key bias is dropped.
    """
    if cross:
        q_weight, q_bias = _linear(model, f"{source}/linear_0")
        kv_weight, kv_bias = _linear(model, f"{source}/linear_1")
        k_weight, v_weight = np.split(kv_weight, 2)
        k_bias, v_bias = np.split(kv_bias, 2) if kv_bias is not None else (None, None)
        out = f"{source}/linear_2"
    else:
        qkv_weight, qkv_bias = _linear(model, f"{source}/linear_0")
        q_weight, k_weight, v_weight = np.split(qkv_weight, 3)
        q_bias, k_bias, v_bias = np.split(qkv_bias, 3) if qkv_bias is not None else (None, None, None)
        out = f"{source}/linear_1"
    if k_bias is not None and np.any(k_bias):
        raise ModelError(f"{source}: a non-zero key bias, which Whisper's architecture has no place for; "
                         "this is not a CTranslate2 Whisper model")
    _put_linear(state, f"{target}.q_proj", q_weight, q_bias)
    _put_linear(state, f"{target}.k_proj", k_weight, None, with_bias=False)
    _put_linear(state, f"{target}.v_proj", v_weight, v_bias)
    _put_linear(state, f"{target}.out_proj", *_linear(model, out))


def whisper_state_dict(model: CT2Model) -> tuple[dict[str, np.ndarray], dict]:
    """The transformers state dict (float32 arrays) and the architecture numbers for ``WhisperConfig``."""
    if model.spec != WHISPER_SPEC:
        raise ModelError(f"model.bin holds a {model.spec or 'unnamed'} model, not a Whisper one; only Whisper exports")
    for flag, expected in (("decoder/pre_norm", True), ("decoder/scale_embeddings", False), ("decoder/alibi", False)):
        if model.has(flag) and bool(model.scalar(flag)) != expected:
            raise ModelError(f"model.bin: {flag} is {not expected}, unlike every Whisper model; it cannot be exported")
    state: dict[str, np.ndarray] = {}
    for part in ("encoder", "decoder"):
        for layer in range(_encoder_layers(model, part)):
            source, target = f"{part}/layer_{layer}", f"model.{part}.layers.{layer}"
            _split_attention(state, model, f"{source}/self_attention", f"{target}.self_attn", cross=False)
            _put_norm(state, model, f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm")
            if part == "decoder":
                _split_attention(state, model, f"{source}/attention", f"{target}.encoder_attn", cross=True)
                _put_norm(state, model, f"{source}/attention/layer_norm", f"{target}.encoder_attn_layer_norm")
            _put_linear(state, f"{target}.fc1", *_linear(model, f"{source}/ffn/linear_0"))
            _put_linear(state, f"{target}.fc2", *_linear(model, f"{source}/ffn/linear_1"))
            _put_norm(state, model, f"{source}/ffn/layer_norm", f"{target}.final_layer_norm")
        _put_norm(state, model, f"{part}/layer_norm", f"model.{part}.layer_norm")
        state[f"model.{part}.embed_positions.weight"] = model.float32(f"{part}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        _put_linear(state, f"model.encoder.{conv}", *_linear(model, f"encoder/{conv}"))
    embeddings = model.float32("decoder/embeddings/weight")
    state["model.decoder.embed_tokens.weight"] = embeddings
    tied = True
    if model.has("decoder/projection/weight"):
        projection = model.float32("decoder/projection/weight")
        tied = projection.shape == embeddings.shape and np.array_equal(projection, embeddings)
        if not tied:
            state["proj_out.weight"] = projection
    if model.has("decoder/projection/bias") and np.any(model.float32("decoder/projection/bias")):
        raise ModelError("model.bin: the output projection has a bias, which Whisper's has not; it cannot be exported")
    d_model = embeddings.shape[1]
    architecture = {
        "vocab_size": embeddings.shape[0],
        "d_model": d_model,
        "num_mel_bins": state["model.encoder.conv1.weight"].shape[1],
        "encoder_layers": _encoder_layers(model, "encoder"),
        "decoder_layers": _encoder_layers(model, "decoder"),
        "encoder_attention_heads": int(model.scalar("encoder/num_heads")),
        "decoder_attention_heads": int(model.scalar("decoder/num_heads")),
        "encoder_ffn_dim": state["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": state["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": state["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": state["model.decoder.embed_positions.weight"].shape[0],
        "tie_word_embeddings": tied,
    }
    return state, architecture


# ---------------------------------------------------------------- the export


def export_transformers(model_folder: str | Path, output: str | Path, force: bool = False) -> Path:
    """Write ``output`` as a transformers Whisper checkpoint rebuilt from the CTranslate2 folder ``model_folder``.

    ``output`` must be new, empty, or an earlier export of ours (``whispersg_export.json``) with ``force``.  The
    folder is built under a temporary name beside ``output`` and renamed into place when complete.
    """
    from whispersg.writers import check_output_folder, remove_replaced_folder

    model_folder, output = Path(model_folder), Path(output)
    check_model_folder(model_folder)
    check_output_folder(output, EXPORT_MARKER, force, "export", "--force")
    for module in ("torch", "transformers", "safetensors"):
        try:
            __import__(module)
        except ImportError as error:
            raise missing_extra("model export", "finetune", module) from error
    ct2 = read_ct2_model(model_folder / "model.bin")
    state, architecture = whisper_state_dict(ct2)
    try:
        ct2_config = json.loads((model_folder / "config.json").read_text(encoding="utf-8"))
        tokenizer_json = json.loads((model_folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{model_folder}: config.json or {TOKENIZER_FILE} is unreadable ({error}); "
                         "re-download or re-convert the model") from error
    added = {entry["content"]: entry["id"] for entry in tokenizer_json.get("added_tokens", [])}
    tokens = whisper_tokens(added, architecture["vocab_size"])
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        built = staging / "checkpoint"
        built.mkdir()
        _save_model(built, state, architecture, tokens, ct2_config)
        _save_processor(built, model_folder, added, architecture["num_mel_bins"])
        del state
        (built / EXPORT_MARKER).write_text(json.dumps({
            "source": str(model_folder.resolve()),
            "format": "transformers",
            "ctranslate2_weights": sorted({ct2.dtypes[name] for name, value in ct2.variables.items() if value.ndim > 1}),
            "multilingual": tokens.multilingual,
        }, indent=2) + "\n")
        remove_replaced_folder(output, EXPORT_MARKER)
        built.replace(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _save_model(folder: Path, state: dict, architecture: dict, tokens: WhisperTokens, ct2_config: dict) -> None:
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    generation = generation_settings(tokens, ct2_config, architecture["max_target_positions"])
    config = WhisperConfig(
        **architecture,
        activation_function="gelu",
        scale_embedding=False,
        pad_token_id=tokens.eot,
        bos_token_id=generation["bos_token_id"],
        eos_token_id=tokens.eot,
        decoder_start_token_id=tokens.sot,
        suppress_tokens=generation["suppress_tokens"],
        begin_suppress_tokens=generation["begin_suppress_tokens"],
        architectures=["WhisperForConditionalGeneration"],
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        expected.discard("proj_out.weight")
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ModelError(f"model.bin does not match the Whisper architecture (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}); it cannot be exported")
    model.load_state_dict(tensors, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(folder, safe_serialization=True)


def _save_processor(folder: Path, model_folder: Path, added: dict[str, int], num_mel_bins: int) -> None:
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    from whispersg.finetune.train import save_standalone

    preprocessor = model_folder / PREPROCESSOR_FILE
    settings = json.loads(preprocessor.read_text(encoding="utf-8")) if preprocessor.is_file() else {}
    settings = {key: value for key, value in settings.items()
                if key in ("chunk_length", "hop_length", "n_fft", "n_samples", "nb_max_frames", "sampling_rate")}
    feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins, **settings)
    # Loaded as a tokenizers-backed WhisperTokenizer; add_prefix_space=False is what OpenAI's hub tokenizers use.
    tokenizer = WhisperTokenizer(tokenizer_file=str(model_folder / TOKENIZER_FILE), add_prefix_space=False,
                                 unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                 pad_token="<|endoftext|>")
    # In id order: transformers takes the last special id + 1 as the first timestamp token.
    specials = [token for token, _ in sorted(added.items(), key=lambda item: item[1])]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    if tokenizer.convert_tokens_to_ids("<|0.00|>") == tokenizer.unk_token_id:
        tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False)
                              for i in range(1501)])
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    save_standalone(folder, processor)

