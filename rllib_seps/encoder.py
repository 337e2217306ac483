"""The SePS encoder-decoder (section 3.1 of the paper): agent id -> embedding, trained to predict
each agent's next observation and reward.

The encoder sees only the one-hot agent index; observation and action bypass it and go to the
decoder. Through that bottleneck z can only carry what distinguishes agents: their reward and
observation-transition functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rllib_seps.options import SePSOptions
from rllib_seps.rollouts import Transitions


class AgentEncoderDecoder(nn.Module):
    """Encoder ``one_hot(i) -> N(mean, diag(exp(log_var)))`` and decoder ``(o, a, z) -> (o', r)``.

    Args:
        n_agents: N, size of the one-hot agent index.
        obs_dim: Size of the (flattened, padded) observation.
        act_dim: Size of the action encoding.
        latent_dim: m, size of the embedding.
        hidden_size: Width of the hidden layers (64 in the paper).
    """

    def __init__(self, n_agents: int, obs_dim: int, act_dim: int, latent_dim: int,
                 hidden_size: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.encoder = nn.Sequential(
            nn.Linear(n_agents, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(obs_dim + act_dim + latent_dim, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, obs_dim + 1),  # next observation and reward
        )

    def encode(self, agent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent indices ``(B,)`` -> mean and log-variance, each ``(B, m)``."""
        mean, log_var = self.encoder(F.one_hot(agent, self.n_agents).float()).chunk(2, dim=-1)
        return mean, log_var

    def forward(self, agent: torch.Tensor, obs: torch.Tensor, action: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicts ``(B, obs_dim + 1)`` from a reparameterised sample z = mean + std * noise."""
        mean, log_var = self.encode(agent)
        z = mean + torch.exp(0.5 * log_var) * noise
        return self.decoder(torch.cat([obs, action, z], dim=-1)), mean, log_var


@dataclass
class Embeddings:
    """The trained encoder's posterior for every agent.

    Attributes:
        agent_ids: Agents in sorted order, one row each below.
        means: ``(N, m)`` posterior means: what is clustered (never a sample).
        stds: ``(N, m)`` posterior standard deviations.
        epoch_losses: Mean training loss of each epoch.
        seconds: Wall time of the training.
    """

    agent_ids: list[str]
    means: np.ndarray
    stds: np.ndarray
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _standardise(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-feature standardisation; statistics only over real (unmasked) entries."""
    mask = np.ones_like(x, bool) if mask is None else mask
    count = np.maximum(mask.sum(0), 1)
    mean = np.where(mask, x, 0).sum(0) / count
    var = np.where(mask, (x - mean) ** 2, 0).sum(0) / count
    return np.where(mask, (x - mean) / np.sqrt(var + 1e-8), 0).astype(np.float32)


def train_encoder(data: Transitions, options: SePSOptions = SePSOptions()) -> Embeddings:
    """Fits the encoder-decoder on the transitions; returns each agent's posterior.

    Loss per transition: squared error of the next observation over the agent's real entries plus
    squared error of the reward, plus ``kl_weight * KL(q(z|i) || N(0, I))``; Adam, minibatches.

    Args:
        data: Transitions from :func:`rllib_seps.rollouts.collect_random_rollouts`.
        options: ``latent_dim``, ``hidden_size``, ``kl_weight``, ``lr``, ``batch_size``,
            ``epochs``, ``normalize``, ``seed`` and ``progress`` are used.
    """
    start = time.perf_counter()
    row_mask = data.obs_mask[data.agent]
    obs, next_obs, reward = data.obs, data.next_obs, data.reward[:, None]
    if options.normalize:
        obs, next_obs, reward = (_standardise(obs, row_mask), _standardise(next_obs, row_mask),
                                 _standardise(reward))
    agent = torch.as_tensor(data.agent)
    inputs = torch.as_tensor(np.concatenate([obs, data.action], axis=1))
    targets = torch.as_tensor(np.concatenate([next_obs, reward], axis=1))
    target_mask = torch.as_tensor(np.concatenate([row_mask, np.ones_like(reward, bool)], axis=1))
    obs_dim = obs.shape[1]

    gen = torch.Generator().manual_seed(options.seed)
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(options.seed)
        model = AgentEncoderDecoder(len(data.agent_ids), obs_dim, data.action.shape[1],
                                    options.latent_dim, options.hidden_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr)

    n, bs = len(agent), options.batch_size
    epoch_losses = []
    bar = tqdm(range(options.epochs), desc="SePS encoder", unit="epoch", disable=not options.progress,
               leave=False)
    for _ in bar:
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for lo in range(0, n, bs):
            idx = order[lo: lo + bs]
            noise = torch.randn(len(idx), options.latent_dim, generator=gen)
            pred, mean, log_var = model(agent[idx], inputs[idx, :obs_dim], inputs[idx, obs_dim:], noise)
            recon = ((pred - targets[idx]) ** 2 * target_mask[idx]).sum(-1).mean()
            kl = -0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(-1).mean()
            loss = recon + options.kl_weight * kl
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        epoch_losses.append(total / n)
        bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}")

    with torch.no_grad():
        mean, log_var = model.encode(torch.arange(len(data.agent_ids)))
    return Embeddings(agent_ids=list(data.agent_ids), means=mean.numpy(),
                      stds=torch.exp(0.5 * log_var).numpy(), epoch_losses=epoch_losses,
                      seconds=time.perf_counter() - start)
