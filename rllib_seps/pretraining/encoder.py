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
from rllib_seps.pretraining.rollouts import Transitions
from rllib_seps.sharing.mapping import AgentID


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

    def forward(self, agent: torch.Tensor, obs_action: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicts ``(B, obs_dim + 1)`` from the concatenated observation and action encoding
        and a reparameterised sample z = mean + std * noise."""
        mean, log_var = self.encode(agent)
        z = mean + torch.exp(0.5 * log_var) * noise
        return self.decoder(torch.cat([obs_action, z], dim=-1)), mean, log_var


@dataclass
class Embeddings:
    """The trained encoder's posterior for every agent.

    Attributes:
        agent_ids: Agents in ``sorted_agents`` order, one row each below.
        means: ``(N, m)`` posterior means (never a sample is clustered).
        stds: ``(N, m)`` posterior standard deviations.
        behaviour: ``(N, P * (D + 1))`` the decoder's predictions (next observation and reward,
            in standardised units) at each agent's mean z, for P probe transitions shared by all
            agents: the agent's modelled transition and reward function.
        losses: Mean training loss over each tenth of the updates.
        seconds: Wall time of the training.
    """

    agent_ids: list[AgentID]
    means: np.ndarray
    stds: np.ndarray
    behaviour: np.ndarray
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _standardise(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-feature standardisation; statistics only over real (unmasked) entries."""
    mask = np.ones_like(x, bool) if mask is None else mask
    count = np.maximum(mask.sum(0), 1)
    mean = np.where(mask, x, 0).sum(0) / count
    var = np.where(mask, (x - mean) ** 2, 0).sum(0) / count
    return np.where(mask, (x - mean) / np.sqrt(var + 1e-8), 0).astype(np.float32)


def train_encoder(data: Transitions, options: SePSOptions = SePSOptions()) -> Embeddings:
    """Fits the encoder-decoder on the transitions; returns each agent's posterior and behaviour.

    Loss per transition: squared error of the next observation over the agent's real entries plus
    squared error of the reward, plus ``kl_weight * KL(q(z|i) || N(0, I))``; Adam on random
    minibatches for a fixed number of updates (so the cost does not grow with the data).

    Args:
        data: Transitions from :func:`rllib_seps.pretraining.rollouts.collect_random_rollouts`.
        options: ``latent_dim``, ``hidden_size``, ``kl_weight``, ``lr``, ``batch_size``,
            ``updates``, ``normalize``, ``seed`` and ``progress`` are used.
    """
    start = time.perf_counter()
    row_mask = data.obs_mask[data.agent]
    obs, next_obs, reward = data.obs, data.next_obs, data.reward[:, None]
    if options.normalize:
        obs, next_obs, reward = (_standardise(obs, row_mask), _standardise(next_obs, row_mask),
                                 _standardise(reward))
    agent = torch.as_tensor(data.agent)
    obs_act = torch.as_tensor(np.concatenate([obs, data.action], axis=1))
    targets = torch.as_tensor(np.concatenate([next_obs, reward], axis=1))
    target_mask = torch.as_tensor(np.concatenate([row_mask, np.ones_like(reward, bool)], axis=1))

    gen = torch.Generator().manual_seed(options.seed)
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(options.seed)
        model = AgentEncoderDecoder(len(data.agent_ids), obs.shape[1], data.action.shape[1],
                                    options.latent_dim, options.hidden_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr)
    # Cosine decay to zero: the last updates settle each agent's z instead of jittering around it.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=options.updates)

    losses, running = [], []
    report_every = max(1, options.updates // 10)
    for update in tqdm(range(options.updates), desc="SePS encoder", unit="update",
                       disable=not options.progress, leave=False, mininterval=1.0):
        idx = torch.randint(len(agent), (options.batch_size,), generator=gen)
        noise = torch.randn(len(idx), options.latent_dim, generator=gen)
        pred, mean, log_var = model(agent[idx], obs_act[idx], noise)
        recon = ((pred - targets[idx]) ** 2 * target_mask[idx]).sum(-1).mean()
        kl = -0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(-1).mean()
        loss = recon + options.kl_weight * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(loss.item())
        if (update + 1) % report_every == 0:
            losses.append(float(np.mean(running)))
            running = []

    with torch.no_grad():
        mean, log_var = model.encode(torch.arange(len(data.agent_ids)))
        behaviour = _behaviour(model, obs_act, mean, gen, options.probe_transitions)
    return Embeddings(agent_ids=list(data.agent_ids), means=mean.numpy(),
                      stds=torch.exp(0.5 * log_var).numpy(), behaviour=behaviour.numpy(),
                      losses=losses, seconds=time.perf_counter() - start)


def _behaviour(model: AgentEncoderDecoder, obs_act: torch.Tensor, means: torch.Tensor,
               gen: torch.Generator, n_probe: int) -> torch.Tensor:
    """Decoder predictions at every agent's mean z for the same probe inputs: ``(N, P * (D+1))``."""
    probe = obs_act[torch.randperm(len(obs_act), generator=gen)[:n_probe]]
    n, p = len(means), len(probe)
    z = means[:, None, :].expand(n, p, -1)
    inputs = torch.cat([probe[None].expand(n, p, -1), z], dim=-1)
    return model.decoder(inputs).reshape(n, -1)
