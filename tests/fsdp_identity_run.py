"""FSDP2 on 2 CPU ranks (gloo): a persona (Identity Block argv[2]) trains, introspects, generates and saves
sharded. Launched by tests/test_identity.py.

Each rank writes rank<k>.safetensors (logits after a training step and an introspection round, generated ids);
rank 0 also reloads the saved persona unsharded and checks its logits and generation.
"""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from ddp import generating_callbacks_on_every_rank
from tiny_models import sample_ids
from torch.distributed.fsdp import fully_shard

from hfself import IdentityConfig, IdentityForCausalLM, IntrospectionCallback
from hfself.data import DEFAULT_MODEL
from hfself.persist import save_tensors
from hfself.train import load_causal_lm
from hfself_plugins.identity import IntrospectionArguments


def main(out_dir: Path, block: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    base, tokenizer = load_causal_lm(DEFAULT_MODEL, attn_implementation="eager")
    torch.manual_seed(0)  # as a recipe's set_seed: every rank builds the same identity block (each starts unseeded)
    persona = IdentityForCausalLM.from_base(base, IdentityConfig(identity_dim=8, init_std=0.5, block=block))
    ids = sample_ids()
    replica = copy.deepcopy(persona)  # the same run, unsharded, in this process
    with torch.no_grad():
        unsharded = persona(input_ids=ids).logits
    for layer in persona.lm.model.layers:
        fully_shard(layer)
    fully_shard(persona)

    args = IntrospectionArguments(identity_max_new_tokens=6, identity_do_sample=False)
    for model in (persona, replica):
        model.train()
        out = model(input_ids=ids, labels=ids)
        if model is persona:
            torch.testing.assert_close(out.logits, unsharded, rtol=0, atol=1e-6)
        out.loss.backward()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        optimizer.step()
        optimizer.zero_grad()
        soul = model.identity_block.soul().detach().clone()
        record = IntrospectionCallback(args, main_lr=1e-2).introspect(model, tokenizer, step=1, is_main=rank == 0)
        assert record["loss"] > 0 and not torch.equal(model.identity_block.soul(), soul)

    persona.eval()
    with torch.no_grad():
        logits = persona(input_ids=ids).logits
    assert not torch.allclose(logits, unsharded), "the step must change the persona"
    with torch.no_grad():  # sharded training and introspection did what the unsharded run does
        torch.testing.assert_close(logits, replica.eval()(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
    callbacks = generating_callbacks_on_every_rank(persona, tokenizer, rank)
    generated = persona.generate(ids[:, :5], max_new_tokens=4, do_sample=False, pad_token_id=0)
    persona.save_pretrained(out_dir / "persona", save_base=True, is_main_process=rank == 0)
    dist.barrier()
    if rank == 0:
        loaded = IdentityForCausalLM.from_pretrained(out_dir / "persona", attn_implementation="eager").eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=ids).logits, logits, rtol=0, atol=1e-6)
        kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert torch.equal(loaded.generate(ids[:, :5], **kwargs), generated)
    save_tensors(out_dir / f"rank{rank}.safetensors", {"logits": logits.contiguous(), "generated": generated,
                                                       "soul": persona.identity_block.soul().detach(), **callbacks})
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
