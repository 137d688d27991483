"""DeepSpeed ZeRO (stage argv[2]) on 2 CPU ranks (gloo): a persona (Identity Block argv[3]) trains, generates,
introspects and saves. Launched by tests/test_identity.py when deepspeed is installed.

An unsharded replica in each process takes the same steps; the sharded persona must match it after a training
step, an introspection round (which must reach the optimizer's fp32 master copy, or the next step undoes it) and
a second step. Each rank writes rank<k>.safetensors; rank 0 reloads the saved persona unsharded.
"""

import copy
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from ddp import generating_callbacks_on_every_rank
from tiny_models import config_only_model, sample_ids

from hfself import IdentityConfig, IdentityForCausalLM, IntrospectionCallback
from hfself.persist import save_tensors
from hfself.train import load_causal_lm
from hfself_plugins.identity import IntrospectionArguments


def logits_of(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def main(out_dir: Path, stage: int, block: str) -> None:
    deepspeed.init_distributed("gloo")
    rank = dist.get_rank()
    # a seeded random init (the same on every rank, and so is the identity block drawn after it), as these
    # tolerances were set for: a pretrained model's larger logits carry ZeRO's reduction-order noise above 1e-5
    base, tokenizer = load_causal_lm(config_only_model(out_dir / f"base{rank}"), attn_implementation="eager")
    persona = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8, init_std=0.5, identity_dropout=0.0, block=block))
    replica = copy.deepcopy(persona)  # the same run, unsharded, in this process
    ids = sample_ids()
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 0.0,
              "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True}
    engine, *_ = deepspeed.initialize(model=persona, optimizer=torch.optim.AdamW(persona.parameters(), lr=1e-2),
                                      config=config)
    replica_optimizer = torch.optim.AdamW(replica.parameters(), lr=1e-2)
    args = IntrospectionArguments(identity_max_new_tokens=6, identity_do_sample=False)
    introspection = {id(m): IntrospectionCallback(args, main_lr=1e-2) for m in (persona, replica)}

    def train_step():
        engine.train()
        out = engine(input_ids=ids, labels=ids)
        engine.backward(out.loss)
        engine.step()
        replica.train()
        replica(input_ids=ids, labels=ids).loss.backward()
        replica_optimizer.step()
        replica_optimizer.zero_grad()

    # ZeRO's reduction sums in another order; the diffusion block's sampler and Adam's normalised steps carry that
    # float noise further. A round the next step undoes moves the logits by ~0.5.
    close = dict(rtol=1e-4, atol=1e-3 if block == "diffusion" else 1e-5)
    start = logits_of(replica, ids)
    train_step()
    torch.testing.assert_close(logits_of(persona, ids), logits_of(replica, ids), **close)
    for model in (persona, replica):
        record = introspection[id(model)].introspect(model, tokenizer, step=1, is_main=rank == 0)
        assert record["loss"] > 0
    torch.testing.assert_close(logits_of(persona, ids), logits_of(replica, ids), **close)
    train_step()  # the step after the round keeps what the round did
    logits = logits_of(persona, ids)
    assert not torch.allclose(logits, start), "training must change the persona"
    torch.testing.assert_close(logits, logits_of(replica, ids), **close)

    callbacks = generating_callbacks_on_every_rank(persona, tokenizer, rank) if stage == 3 else {}
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    generated = persona.generate(ids[:, :5], **kwargs)
    assert torch.equal(generated, replica.generate(ids[:, :5], **kwargs))
    persona.save_pretrained(out_dir / "persona", save_base=True, is_main_process=rank == 0)
    dist.barrier()
    if rank == 0:
        loaded = IdentityForCausalLM.from_pretrained(out_dir / "persona", attn_implementation="eager")
        torch.testing.assert_close(logits_of(loaded, ids), logits, rtol=0, atol=1e-5)
    save_tensors(out_dir / f"rank{rank}.safetensors", {"logits": logits.contiguous(), "generated": generated,
                                                       **callbacks})
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
