"""WER of models before/after fine-tuning (run with --help). The logic lives in whispersg.finetune; this is a launcher."""

import os
import sys

# This folder holds evaluate.py, which would shadow the 'evaluate' library that training imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

from whispersg.cli.finetune import evaluate_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(evaluate_main())
