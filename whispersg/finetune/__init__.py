"""Fine-tuning Whisper on local corpora: corpus readers, dataset finalisation, training, evaluation.

Data flows  corpus reader (``imda``, ``common_voice`` or your own) → interchange
files (``interchange``) → ``finalize`` (a ``datasets`` DatasetDict of audio and
sentences) → ``train`` (Seq2SeqTrainer, features computed on the fly) →
``evaluate`` (WER before/after) → ``whispersg models convert`` (CTranslate2).

Needs the ``[finetune]`` extra; the scripts in ``finetuning/`` and the notebook
are thin layers over these modules.
"""
