"""identity_stability: spread of identity vectors recomputed under perturbed prompts (hfself evals).

predictions: one vector per perturbed prompt, scaled to unit length (so that spaces of
any width and norm compare). Score: total variance (mean squared distance to the mean
unit vector), in [0, 1]; 0 means the perturbations changed nothing, 1 that the answers
point every which way. Also the mean cosine distance to the mean vector.
"""

import datasets
import evaluate
import torch


class IdentityStability(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions: a list of float vectors",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32"))}))

    def _compute(self, predictions):
        p = torch.nn.functional.normalize(torch.tensor(predictions), dim=-1)  # unit vectors: variance in [0, 1]
        centre = p.mean(0, keepdim=True)
        variance = ((p - centre) ** 2).sum(-1).mean().item()
        spread = (1 - torch.nn.functional.cosine_similarity(p, centre, dim=-1)).mean().item()
        return {"identity_variance": variance, "identity_cosine_spread": spread}
