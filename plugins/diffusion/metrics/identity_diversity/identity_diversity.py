"""identity_diversity: how distinct the identities of successive introspection rounds are (hfself diffusion).

predictions: one identity vector per round. Score: the mean pairwise cosine
distance (1 − cos) over all pairs, in [0, 2]; near 0 means the rounds collapsed
onto one identity. Also the mean distance between consecutive rounds and the
smallest pairwise distance.
"""

import datasets
import evaluate
import torch


class IdentityDiversity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions: a list of float vectors (>= 2)",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32"))}))

    def _compute(self, predictions):
        p = torch.nn.functional.normalize(torch.tensor(predictions), dim=-1)
        if p.shape[0] < 2:
            raise ValueError("identity_diversity needs at least two identities")
        distance = 1 - p @ p.T
        pairs = torch.triu_indices(len(p), len(p), offset=1)
        pairwise = distance[pairs[0], pairs[1]]
        consecutive = distance.diagonal(offset=1)
        return {"identity_diversity": pairwise.mean().item(), "consecutive_distance": consecutive.mean().item(),
                "min_pairwise_distance": pairwise.min().item()}
