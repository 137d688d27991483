"""perplexity_ratio: perplexity of a persona vs its base model on the same tokens (hfself evals).

predictions: the persona's summed negative log-likelihood per text; references: the
base model's, over the same tokens; token_counts: tokens scored per text.
perplexity = exp(Σ nll / Σ tokens); ratio = persona ÷ base (> 1: conditioning costs quality).
"""

import math

import datasets
import evaluate


class PerplexityRatio(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions, references: floats; token_counts: ints",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}))

    def _compute(self, predictions, references, token_counts):
        tokens = sum(token_counts)
        persona, base = math.exp(sum(predictions) / tokens), math.exp(sum(references) / tokens)
        return {"perplexity_persona": persona, "perplexity_base": base, "perplexity_ratio": persona / base,
                "tokens": tokens}
