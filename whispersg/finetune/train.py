"""Fine-tuning a Whisper checkpoint with ``Seq2SeqTrainer`` on prepared datasets.

``TrainingSettings`` carries the original WhisperSG recipe as defaults
(whisper-small.en, lr 1e-5, 500 warm-up steps, effective batch 64, one epoch,
Adafactor, gradient checkpointing, fp16 on CUDA only, WER-selected best model).
Every checkpoint folder is standalone: weights, tokenizer, feature extractor and
generation config, so it can be evaluated, resumed or converted as it is.
The same code runs on one process or under ``torchrun`` / ``accelerate launch``
(PyTorch DDP): only the main process claims the output folder and writes files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from whispersg.errors import DataError, ModelError

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "openai/whisper-small.en"
DEFAULT_LANGUAGE = "en"  # of a multilingual base when --language is not given (WhisperSG transcribes English)
DEFAULT_MAX_EVAL_SAMPLES = 500  # evaluation during training generates text: a capped, seeded sample keeps it minutes
RUN_MARKER = "whispersg_train.json"  # marks an output folder a training run of ours wrote
# What --train_only leaves trainable (everything else is frozen): less to move, less to forget.
TRAIN_ONLY = ("all", "decoder", "embeddings")


@dataclass
class TrainingSettings:
    """Everything a training run needs; the CLI flags and the notebook's parameters map onto these fields."""

    datasets: list[str]
    output_dir: str
    weights: Optional[list[float]] = None
    oversample: bool = False  # with weights: repeat smaller sources instead of leaving larger ones partly unused
    base_model: str = DEFAULT_BASE_MODEL
    language: Optional[str] = None  # multilingual base models only (default en); ".en" models are English
    task: str = "transcribe"
    train_only: str = "all"  # "decoder": encoder frozen; "embeddings": only the decoder's token embeddings (tied output)
    blend: float = 1.0  # share of the training's change kept in the saved model (WiSE-FT); below 1 forgets less
    learning_rate: float = 1e-5
    warmup_steps: int = 500
    batch_size: int = 16  # per device
    effective_batch_size: int = 64  # reached with gradient accumulation
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    optim: str = "adafactor"
    gradient_checkpointing: bool = True
    eval_steps: int = 1000
    save_steps: int = 1000
    save_total_limit: Optional[int] = 3
    logging_steps: int = 25
    generation_max_length: int = 225
    max_eval_samples: Optional[int] = DEFAULT_MAX_EVAL_SAMPLES  # 0 or None: the whole test split
    seed: int = 42
    resume_from_checkpoint: Optional[str] = None  # a checkpoint folder, or "latest"
    dataloader_num_workers: int = 0
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    overwrite: bool = False  # train again into the output folder of an earlier run (resuming needs no flag)

    @property
    def gradient_accumulation_steps(self) -> int:
        return max(1, math.ceil(self.effective_batch_size / self.batch_size))


def is_multilingual(model: Any) -> bool:
    """English-only Whisper vocabularies have 51864 tokens; multilingual ones more."""
    return int(model.config.vocab_size) > 51864


def load_base(base_model: str, language: Optional[str] = None, task: str = "transcribe") -> tuple[Any, Any]:
    """Model and processor of a Whisper checkpoint (local folder, or the local Hugging Face cache).

    For a multilingual model the tokenizer's prefix (``<|sot|><|lang|><|task|><|notimestamps|>``, which the
    labels start with) and the generation config get ``language`` (default ``en``) and ``task``, so training
    teaches the prompt that generation and the pipeline use; English-only models have no such tokens.
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(base_model)
        model = WhisperForConditionalGeneration.from_pretrained(base_model, use_safetensors=_has_safetensors(base_model))
    except OSError as error:
        if not Path(base_model).exists():
            raise ModelError(
                f"{base_model}: not a local folder and not in the Hugging Face cache, so it needs a download; "
                "rerun with --allow_download on a connected machine, or pass a local checkpoint folder"
            ) from error
        raise ModelError(f"{base_model}: cannot load a Whisper checkpoint ({str(error).splitlines()[0]})") from error
    if is_multilingual(model):
        language = language or DEFAULT_LANGUAGE
        processor.tokenizer.set_prefix_tokens(language=language, task=task)
        model.generation_config.language = language
        model.generation_config.task = task
    elif language not in (None, "en", "english", "English") or task != "transcribe":
        raise ModelError(f"{base_model}: an English-only model transcribes English; drop --language/--task "
                         "or start from a multilingual model")
    model.generation_config.forced_decoder_ids = None
    model.config.forced_decoder_ids = None
    return model, processor


def restrict_training(model: Any, train_only: str) -> int:
    """Freeze all but the part ``train_only`` names (see ``TRAIN_ONLY``); returns the trainable parameter count.

    ``embeddings`` trains the decoder's token embedding matrix, which Whisper ties to the output projection:
    mostly which words come out, with the acoustic model and the decoder's layers as they were.
    """
    if train_only not in TRAIN_ONLY:
        raise DataError(f"--train_only {train_only!r}: choose one of {', '.join(TRAIN_ONLY)}")
    if train_only != "all":
        decoder = model.get_decoder()
        keep = list(decoder.parameters()) if train_only == "decoder" else [decoder.embed_tokens.weight]
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in keep:
            parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def blend_with_base(model: Any, base_weights: Optional[dict], share: float) -> None:
    """Keep ``share`` of what training changed: base + share × (tuned − base), weight-space ensembling
    (WiSE-FT, Wortsman et al. 2022, arXiv:2109.01903), which keeps much of the gain and forgets less."""
    if share >= 1.0 or not base_weights:
        return
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in base_weights:
                base = base_weights[name].to(parameter.device)
                parameter.copy_(base + share * (parameter - base))


def _has_safetensors(base_model: str) -> Optional[bool]:
    """Local folders must hold safetensors weights (no pickle loading); hub ids let transformers choose."""
    folder = Path(base_model)
    if not folder.is_dir():
        return None
    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder}: no .safetensors weights; convert the checkpoint to safetensors first")
    return True


def save_standalone(folder: str | Path, processor: Any, model: Any = None) -> None:
    """Make a checkpoint folder loadable on its own: processor (tokenizer + feature extractor) and generation config.

    The feature extractor is also written as ``preprocessor_config.json``, which
    CTranslate2 conversion and faster-whisper read.
    """
    folder = Path(folder)
    processor.save_pretrained(folder)
    processor.feature_extractor.save_pretrained(folder)
    if model is not None:
        model.generation_config.save_pretrained(folder)


def wer_metric():
    """The offline ``evaluate`` WER metric (see ``wer_metric.py``)."""
    import evaluate

    from whispersg.finetune import wer_metric

    return evaluate.load(wer_metric.__file__)


def normalized_wer(references: list[str], predictions: list[str], metric: Any = None) -> float:
    """WER after Whisper's English normaliser (``metrics.corpus_wer``), computed by the ``evaluate`` metric."""
    from whispersg.metrics import corpus_wer

    metric = metric or wer_metric()
    try:
        return corpus_wer(references, predictions,
                          scorer=lambda refs, hyps: metric.compute(references=refs, predictions=hyps))
    except ValueError as error:
        raise DataError(str(error)) from error


def build_trainer(settings: TrainingSettings, model: Any = None, processor: Any = None):
    """A ready ``Seq2SeqTrainer`` for ``settings`` (the notebook inspects it before calling ``train``)."""
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from whispersg.finetune.data import SpeechCollator, mix_datasets

    if not 0.0 <= settings.blend <= 1.0:  # checked before any data or model is loaded
        raise DataError(f"--blend {settings.blend}: give a share between 0 and 1")
    train_set = mix_datasets(settings.datasets, "train", settings.weights, settings.seed, settings.oversample)
    if train_set is None:
        raise DataError("none of the prepared datasets has a train split; finalize one with --test_size below 1")
    eval_set = mix_datasets(settings.datasets, "test", None, settings.seed)
    if eval_set is not None and settings.max_eval_samples:
        eval_set = eval_set.select(range(min(settings.max_eval_samples, len(eval_set))), keep_in_memory=True)
    if eval_set is None:
        logger.warning("no prepared dataset has a test split: training without evaluation, the last step is kept")
    if model is None or processor is None:
        model, processor = load_base(settings.base_model, settings.language, settings.task)
    trainable = restrict_training(model, settings.train_only)
    # The base's trainable weights, kept only when the saved model is to be a blend of base and tuned.
    base_weights = ({name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
                    if settings.blend < 1.0 else None)
    logger.info("training %s: %d of %d parameters", settings.train_only, trainable,
                sum(p.numel() for p in model.parameters()))
    # Whisper's forward takes **kwargs, so the Trainer would assume it divides the loss by the accumulation
    # count itself and skip its own division: logged loss and clipping would see N times the loss.
    model.accepts_loss_kwargs = False
    model.config.use_cache = not settings.gradient_checkpointing
    metric = wer_metric()
    tokenizer = processor.tokenizer

    def compute_metrics(prediction) -> dict:
        predicted = prediction.predictions
        labels = prediction.label_ids.copy()
        labels[labels == -100] = tokenizer.pad_token_id
        predicted[predicted == -100] = tokenizer.pad_token_id
        hypotheses = tokenizer.batch_decode(predicted, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"wer": normalized_wer(references, hypotheses, metric)}

    class StandaloneCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:  # the process that wrote the checkpoint
                save_standalone(Path(args.output_dir) / f"checkpoint-{state.global_step}", processor, model)

    cuda = torch.cuda.is_available()
    evaluating = eval_set is not None
    checkpointing = _checkpointing_argument(Seq2SeqTrainingArguments)
    arguments = Seq2SeqTrainingArguments(
        output_dir=settings.output_dir,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        optim=settings.optim,
        **{checkpointing: settings.gradient_checkpointing,
           # Non-reentrant checkpointing: what DDP needs, harmless on one process.
           f"{checkpointing}_kwargs": {"use_reentrant": False}},
        fp16=cuda,
        use_cpu=not cuda,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        logging_steps=settings.logging_steps,
        predict_with_generate=True,
        generation_max_length=settings.generation_max_length,
        load_best_model_at_end=evaluating,
        metric_for_best_model="wer",
        greater_is_better=False,
        report_to=settings.report_to,
        seed=settings.seed,
        data_seed=settings.seed,
        remove_unused_columns=False,  # the collator needs the raw audio and sentence columns
        label_names=["labels"],
        dataloader_num_workers=settings.dataloader_num_workers,
        ddp_find_unused_parameters=False,  # every parameter gets a gradient; the search would cost a pass
    )
    # Under torchrun the arguments above set up the process group; only the main process claims the folder.
    with arguments.main_process_first(local=False, desc="claiming the output folder"):
        if arguments.process_index == 0:
            claim_output_dir(settings)
    trainer = Seq2SeqTrainer(
        model=model,
        args=arguments,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=SpeechCollator(processor, model.config.decoder_start_token_id),
        compute_metrics=compute_metrics,
        processing_class=processor,
        callbacks=[StandaloneCheckpoints()],
    )
    trainer.whispersg_base_weights = base_weights
    return trainer


def claim_output_dir(settings: TrainingSettings) -> None:
    """The trainer writes over files in its output folder: only a new or empty one, or an earlier run of ours."""
    import json

    from whispersg.writers import atomic_write_text, check_output_folder

    output = Path(settings.output_dir)
    check_output_folder(output, RUN_MARKER, settings.overwrite or settings.resume_from_checkpoint is not None,
                        "training run", "--overwrite (or --resume_from_checkpoint)")
    atomic_write_text(output / RUN_MARKER, json.dumps({"base_model": settings.base_model, "datasets": settings.datasets}) + "\n")


def _checkpointing_argument(arguments_class) -> str:
    """transformers 5 renamed gradient_checkpointing (kept until v6); use the name this version prefers."""
    import dataclasses

    names = {spec.name for spec in dataclasses.fields(arguments_class)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def latest_checkpoint(output_dir: str | Path) -> Optional[str]:
    """The newest ``checkpoint-N`` folder of a run, or None."""
    checkpoints = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return str(max(checkpoints, key=lambda p: int(p.name.split("-")[-1]))) if checkpoints else None


def train(settings: TrainingSettings) -> dict:
    """Build the trainer and run it (see ``run_training``)."""
    return run_training(build_trainer(settings), settings)


def run_training(trainer, settings: TrainingSettings) -> dict:
    """Train (resuming if asked), save the best model standalone in ``output_dir``, return the final metrics."""
    resume = settings.resume_from_checkpoint
    if resume == "latest":
        resume = latest_checkpoint(settings.output_dir)
        if resume is None:
            raise DataError(f"{settings.output_dir}: no checkpoint-N folder to resume from")
    elif resume is not None and not Path(resume).is_dir():
        raise DataError(f"{resume}: no such checkpoint folder")
    result = trainer.train(resume_from_checkpoint=resume)
    blend_with_base(trainer.model, getattr(trainer, "whispersg_base_weights", None), settings.blend)
    trainer.save_model(settings.output_dir)
    if trainer.is_world_process_zero():
        save_standalone(settings.output_dir, trainer.processing_class, trainer.model)
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())  # every process takes part (the evaluation is sharded)
    trainer.save_metrics("all", metrics)
    return metrics
