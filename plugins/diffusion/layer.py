"""The diffusion Identity Block: the identity is denoised from fresh noise instead of being stored as one point.

    noise (identity_dim) --K sampler steps of ε_θ(x_t, t, context)--> identity --soul MLP--> soul --W_l--> Q/K biases

* **Gestalt**: the whole identity latent comes out of one sampling run, never token by token.
* **Denoising as introspection**: each round trains ε_θ toward the round's targets, draws fresh
  noise and lets the sampler settle it into the new identity.
* **Continuous latent**: identities are points of one latent space; two personas blend by slerp
  of their noise (see :mod:`.model`).
* **Two timescales**: the LM trains every step; the identity changes only in rounds
  (``identity_update_interval`` steps apart, ``sample_steps`` denoising steps each).
* **No mode collapse**: the targets are a distribution (the self-description plus summaries of
  the corpus batches seen since the last round), and every round samples fresh noise from it.

Causality and KV-cache equivalence hold as for the MLP block: the identity depends on the
persistent state (noise, context, weights), never on the tokens being processed. Training
forwards run the sampler with gradients, so the LM loss reaches the denoiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hfself.arch import ArchInfo
from hfself.embed import masked_mean
from hfself.sharding import backward_outside_step, call_whole
from hfself_plugins.identity import IdentityBlock, IdentityConfig

from .config import DiffusionBlockConfig


class ResidualBlock(nn.Module):
    """LayerNorm → FiLM(timestep + context) → MLP, added back to the stream."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.fc_in = nn.Linear(hidden, hidden)
        self.fc_out = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=-1)  # (B, hidden) each
        y = self.norm(h) * (1 + scale) + shift
        return h + self.fc_out(F.silu(self.fc_in(y)))


class Denoiser(nn.Module):
    """ε_θ(x_t, t, context): predicts the noise in an identity latent, conditioned on timestep and context."""

    def __init__(self, latent_dim: int, context_dim: int, hidden: int, num_layers: int):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.time_proj = Timesteps(hidden, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(hidden, hidden)
        self.context_proj = nn.Linear(context_dim, hidden)
        self.input_proj = nn.Linear(latent_dim, hidden)
        self.layers = nn.ModuleList(ResidualBlock(hidden) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(hidden)
        self.output_proj = nn.Linear(hidden, latent_dim)
        nn.init.zeros_(self.output_proj.weight)  # starts at 0: with v-prediction, the identity ≈ the scaled noise
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x: (B, latent_dim), t: (B,) integer timesteps, context: (B, context_dim)
        emb = self.time_embedding(self.time_proj(t).to(x.dtype)) + self.context_proj(context)  # (B, hidden)
        h = self.input_proj(x)  # (B, hidden)
        for layer in self.layers:
            h = layer(h, emb)
        return self.output_proj(F.silu(self.norm_out(h)))  # (B, latent_dim)


class DiffusionIdentityBlock(IdentityBlock):
    """An Identity Block whose latent is sampled by a small diffusion model (``block: diffusion``).

    Persistent state (buffers, saved with the persona and in Trainer checkpoints):
    ``noise`` (the current round's starting noise), ``context`` (the running
    self-context the denoiser is conditioned on, unit norm or zero), ``identity``
    (the last denoised identity), ``identity_ema``, ``target_mean`` (the running
    centre of summaries), ``encoder`` (the fixed projection from d_model
    summaries to latent targets) and ``rounds``. Round ``r`` draws its noise from
    ``seed`` and ``r`` alone, so a fixed seed gives the same identities and every
    DDP rank the same ones.
    """

    observes_context = True
    latent_state_keys = ("noise",)

    def __init__(self, config: IdentityConfig, arch: ArchInfo):
        super().__init__(config, arch)
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

        self.options = DiffusionBlockConfig.from_block_config(config.block_config)
        config.block_config = self.options.to_dict()  # the persona records every option, not only those set
        opts, d_latent, d_model = self.options, config.identity_dim, arch.hidden_size
        del self.identity  # the MLP block's parameter; here the identity is sampled state
        self.denoiser = Denoiser(d_latent, d_model, opts.denoiser_hidden, opts.denoiser_layers)
        self.train_scheduler = DDPMScheduler(num_train_timesteps=opts.num_train_timesteps,
                                             beta_schedule=opts.beta_schedule, clip_sample=False,
                                             prediction_type=opts.prediction_type)
        sampler_cls = DDIMScheduler if opts.sampler == "ddim" else DPMSolverMultistepScheduler
        self.sample_scheduler = sampler_cls.from_config(self.train_scheduler.config, timestep_spacing="trailing",
                                                        clip_sample=False)
        encoder = torch.randn(d_latent, d_model, generator=self._generator(0, stream=2))
        self.register_buffer("encoder", encoder)  # unit-norm summary -> latent with ~N(0, 1) entries
        self.register_buffer("noise", torch.randn(d_latent, generator=self._generator(0, stream=0)))
        self.register_buffer("context", torch.zeros(d_model))
        self.register_buffer("target_mean", torch.zeros(d_model))
        self.register_buffer("identity", torch.zeros(d_latent))
        self.register_buffer("identity_ema", torch.zeros(d_latent))
        self.register_buffer("rounds", torch.zeros(1, dtype=torch.long))
        self._observed: list[torch.Tensor] = []  # corpus summaries since the last round (in checkpoints only)
        with torch.no_grad():
            self.identity.copy_(self.latent())
            self.identity_ema.copy_(self.identity)

    # ------------------------------------------------------------------ sampling

    def _generator(self, round_index: int, stream: int) -> torch.Generator:
        """Stream 0: a round's noise; 1: its denoising loss; 2: the encoder. Same seed, same numbers."""
        return torch.Generator().manual_seed((self.options.seed * 1_000_003 + round_index) * 3 + stream)

    def denoise(self, noise: torch.Tensor, context: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """(..., identity_dim) noise -> identity, by ``steps`` sampler steps (differentiable under autograd)."""
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(steps or self.options.sample_steps)  # also resets multistep samplers
        x = noise.reshape(-1, noise.shape[-1]) * scheduler.init_noise_sigma  # (B, identity_dim)
        condition = context.reshape(-1, context.shape[-1]).expand(x.shape[0], -1) * context.shape[-1] ** 0.5
        for t in scheduler.timesteps:
            t_batch = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
            eps = call_whole(self.denoiser, x, t_batch, condition)  # (B, identity_dim)
            x = scheduler.step(eps, int(t), x).prev_sample
        return x.reshape(noise.shape)

    def latent(self) -> torch.Tensor:
        """(identity_dim,) the identity denoised from this round's noise and the current self-context."""
        return self.denoise(self.noise, self.context)

    @torch.no_grad()
    def refresh_identity(self) -> None:
        """Denoise the identity again from the (blended) noise and self-context."""
        self.identity.copy_(self.latent())

    def sample_identities(self, count: int, round_index: int | None = None) -> torch.Tensor:
        """(count, identity_dim) identities from fresh noise (a seeded generator), no state changed."""
        start = int(self.rounds) if round_index is None else round_index
        noise = torch.stack([torch.randn(self.noise.shape, generator=self._generator(start + i, 0))
                             for i in range(count)]).to(self.noise.device)
        return self.denoise(noise, self.context)

    # ------------------------------------------------------------------ targets

    def observe(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Keep the summaries of a training batch (B, T, d_model) as targets of the next round."""
        mask = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        self._observed.extend(masked_mean(hidden_states.float(), mask).unbind(0))
        del self._observed[:-self.options.queue_size]

    def round_inputs(self) -> dict[str, torch.Tensor]:
        observed = torch.stack(self._observed) if self._observed else torch.zeros(0, self.target_mean.numel())
        return {"observed": observed}  # (N, d_model)

    def load_round_inputs(self, tensors: dict[str, torch.Tensor]) -> None:
        self._observed = list(tensors["observed"].to(self.target_mean.device).unbind(0))

    def _observed_on_all_ranks(self, device) -> torch.Tensor:
        """(N, d_model) the observed summaries of every rank, in rank order (identical on every rank)."""
        rows = torch.stack(self._observed).to(device) if self._observed else torch.zeros(0, self.target_mean.numel(),
                                                                                          device=device)
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return rows
        from accelerate.utils import gather, pad_across_processes

        counts = gather(torch.tensor([rows.shape[0]], device=device)).tolist()
        padded = gather(pad_across_processes(rows, dim=0))  # (world * max_count, d_model)
        chunks = padded.split(max(counts)) if max(counts) else []
        return torch.cat([c[:n] for c, n in zip(chunks, counts)]) if max(counts) else rows

    def encode(self, summaries: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """(N, d_model) summaries -> (N, identity_dim) latent targets: the centred direction, projected."""
        return F.normalize(summaries - centre, dim=-1) @ self.encoder.T

    def denoising_loss(self, targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """DDPM loss on (N, identity_dim) targets, conditioned on the self-context (with dropout)."""
        n, device = targets.shape[0], targets.device
        t = torch.randint(0, self.options.num_train_timesteps, (n,), generator=generator).to(device)
        noise = torch.randn(targets.shape, generator=generator).to(device)
        keep = (torch.rand(n, 1, generator=generator) >= self.options.condition_dropout).to(device)
        condition = self.context.expand(n, -1) * keep * self.context.numel() ** 0.5
        noisy = self.train_scheduler.add_noise(targets, noise, t)
        kind = self.options.prediction_type
        wanted = {"epsilon": lambda: noise, "sample": lambda: targets,
                  "v_prediction": lambda: self.train_scheduler.get_velocity(targets, noise, t)}[kind]()
        return F.mse_loss(call_whole(self.denoiser, noisy, t, condition), wanted)

    def introspection_loss(self, summary: torch.Tensor) -> torch.Tensor:
        """Denoising loss toward one self-description's summary (d_model,)."""
        centre = self.target_mean if int(self.rounds) > 0 else summary
        target = self.encode(summary[None].float(), centre)  # (1, identity_dim)
        return self.denoising_loss(target, self._generator(int(self.rounds), stream=1))

    # ------------------------------------------------------------------ the round

    def introspection_round(self, summary: torch.Tensor, optimizer: torch.optim.Optimizer, loss_scale: float = 1.0,
                            ema: float = 0.0) -> float:
        """Train ε_θ toward this round's targets, then sample a new identity from fresh noise.

        ``ema`` (the MLP block's identity EMA) is not used: this block's EMA decay is
        ``identity_ema`` in its own options.
        """
        summary = summary.float()
        observed = self._observed_on_all_ranks(summary.device)
        summaries = torch.cat([summary.expand(self.options.self_target_weight, -1), observed])  # (N, d_model)
        first_round = int(self.rounds) == 0
        centre = summaries.mean(0) if first_round else self.target_mean
        targets = self.encode(summaries, centre)  # (N, identity_dim)
        generator = self._generator(int(self.rounds), stream=1)
        for _ in range(self.options.denoise_updates):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_scale * self.denoising_loss(targets, generator)
            backward_outside_step(loss, list(self.parameters()))
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            m = 0.0 if first_round else self.options.target_momentum
            self.target_mean.mul_(m).add_(summaries.mean(0), alpha=1 - m)
            direction = F.normalize(summary - centre, dim=-1)
            self.context.copy_(F.normalize(self.options.context_ema * self.context
                                           + (1 - self.options.context_ema) * direction, dim=-1))
            self.rounds += 1
            self.noise.copy_(torch.randn(self.noise.shape, generator=self._generator(int(self.rounds), 0)))
            self.identity.copy_(self.latent())
            decay = self.options.identity_ema
            self.identity_ema.mul_(decay).add_(self.identity, alpha=1 - decay)
        self._observed.clear()
        return loss.item()
