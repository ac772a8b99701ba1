"""Word error rate as an ``evaluate`` metric module, loadable offline from this file.

``evaluate.load("wer")`` fetches its script from the Hugging Face hub, which
WhisperSG never contacts unasked; this module computes the same quantity
(jiwer's corpus WER: total errors ÷ total reference words) so
``evaluate.load(<this file>)`` works on a machine without network.
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = "Corpus word error rate (substitutions + deletions + insertions) / reference words, via jiwer."


class WordErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        pairs = [(r, p) for r, p in zip(references, predictions) if r.strip()]
        if not pairs:
            raise ValueError("no reference words to score against")
        return jiwer.wer([r for r, _ in pairs], [p for _, p in pairs])
