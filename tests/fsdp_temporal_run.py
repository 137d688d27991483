"""FSDP2 on 2 CPU ranks (gloo): a temporal LoRA model trains a step sharded and saves the gathered state.
Launched by tests/test_temporal.py.

Each rank writes rank<k>.safetensors (logits after the step); rank 0 reloads the saved model unsharded and checks
its logits against the sharded ones.
"""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from tiny_models import sample_ids, tiny_model
from torch.distributed.fsdp import fully_shard

from hfself.arch import unwrap_model
from hfself.persist import save_tensors
from hfself_plugins.temporal import TemporalLoraConfig, TemporalLoraForCausalLM


def logits_of(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = TemporalLoraForCausalLM.from_base(tiny_model("llama"), TemporalLoraConfig(domains=["a", "b"]))
    model.set_trainable("a")
    replica = copy.deepcopy(model)  # the same step, unsharded, in this process
    ids = sample_ids()
    for layer in unwrap_model(model.lm).model.layers:
        fully_shard(layer)
    fully_shard(model)
    for m in (model, replica):
        m.train()
        m(input_ids=ids, labels=ids).loss.backward()
        torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5).step()
    logits = logits_of(model, ids)
    torch.testing.assert_close(logits, logits_of(replica, ids), rtol=1e-4, atol=1e-5)
    model.save_pretrained(out_dir / "model", save_base=True, is_main_process=rank == 0)
    dist.barrier()
    if rank == 0:
        loaded = TemporalLoraForCausalLM.from_pretrained(out_dir / "model")
        torch.testing.assert_close(logits_of(loaded, ids), logits, rtol=1e-5, atol=1e-5)
    save_tensors(out_dir / f"rank{rank}.safetensors", {"logits": logits.contiguous()})
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
