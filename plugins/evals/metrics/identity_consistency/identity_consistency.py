"""identity_consistency: mean cosine similarity between identity vectors and a target vector (hfself evals).

predictions: vectors derived from generated self-descriptions; references: the
target persona summary's vector, one per prediction. Range [-1, 1]; higher is
more consistent.
"""

import datasets
import evaluate
import torch


class IdentityConsistency(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions, references: lists of float vectors",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")),
                                        "references": datasets.Sequence(datasets.Value("float32"))}))

    def _compute(self, predictions, references):
        p, r = torch.tensor(predictions), torch.tensor(references)
        cos = torch.nn.functional.cosine_similarity(p, r, dim=-1)
        return {"identity_consistency": cos.mean().item(), "per_item": cos.tolist()}
