"""The SePS encoder-decoder (section 3.1 of the paper): agent id -> embedding, trained to predict
each agent's next observation and reward.

The encoder sees only the one-hot identity; observation and action bypass it and go to the
decoder. Through that bottleneck z can only carry what distinguishes identities: their reward and
observation-transition functions.

**Decoys.** Each agent enters the encoder as :data:`DECOYS` identities, each fitted on its own
contiguous share of the agent's transitions (quarters in collection order: separate episodes
and trajectories, so that they are as independent as two agents' data). The decoys of one agent
have the same reward and dynamics by construction, so how far apart they land is the noise of the
estimate at this data size and fit; the clustering compares agents against exactly that noise
(:mod:`rllib_seps.pretraining.clustering`).

**When to stop.** With ``updates="auto"`` Adam runs at ``lr`` for at least :data:`MIN_EPOCHS`
passes over the data (over the new data, when the decoder starts from an earlier fit's) and until
the errors of next observation and of reward on held-out transitions (:data:`HOLDOUT`, never
trained on) both stop improving (by :data:`THRESHOLD`, over :data:`PATIENCE` checks, or
:data:`RARE_REWARD_PATIENCE` where some agent's rewards are rare), then at
``lr / 10`` likewise, and stops at the second plateau (or at ``max_updates``). A given number of
updates instead runs exactly that many with cosine decay (the paper's fixed budget).

**Warm start.** When pretraining collects more data, the next fit may start its decoder from the
last fit's (``decoder_init``): how next observation and reward follow from observation, action and
z is the same function on more data. The encoder starts afresh, so every decoy is again estimated
from its own data alone, and their spread stays the noise of the estimate.
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

DECOYS = 4
"""Identities per agent in the encoder; 4 give 3 independent noise contrasts per agent and two
disjoint halves of the data (decoys 0-1 and 2-3) for the stability check."""
CHECK_EVERY = 100
"""Updates between two evaluations of the convergence loss. Every 50 halved the fits of small
data (the panel's two-agent and MPE tasks 6-14 s instead of 8-24) but stopped large fits early:
less fitted, LBF of equal levels, C-RWARE(2)-(3) and pistonball then took rounds up to the 128k
cap (220-530 s; docs/pretraining.md, Measurements)."""
PATIENCE = 2
"""Checks without an improvement of THRESHOLD that make a plateau, where every agent's reward
varies (RARE_REWARDS). At the full rate the evaluation loss jitters, and with 3 checks a chance
new best kept fits of a few thousand transitions going for hundreds of passes (`simple_spread`
seed 0: three rounds of about 2000 updates, 22 s; with 2, one round of 1600, 5.5 s)."""
RARE_REWARD_PATIENCE = 3
"""Checks that make a plateau where some agent's rewards are rare: types that differ only in them
are learned last, in slow steps that 2 checks cut off (LBF seed 0 then merged two levels, and a
C-RWARE(1) and a C-RWARE(2) seed went on to the 128k cap)."""
RARE_REWARDS = 0.1
"""An agent whose reward differs from its most common one in fewer than this fraction of its
transitions has rare rewards (on the panel: LBF, C-RWARE, KAZ and `simple_tag` 0-0.03; every
other env 0.24 or more)."""
THRESHOLD = 0.02
"""Improvement of the convergence measure (the sum of the logs of the evaluation errors of next
observation, per entry, and of reward, each plus FITTED) that counts as progress: about 2% less
error in either."""
FITTED = 0.01
"""An error below this fraction of its (standardised) target's variance counts as fitted."""
PLATEAUS = 2
"""Plateaus until training stops; after each but the last the learning rate drops tenfold."""
MIN_EPOCHS = 4.0
"""Passes over the data before the first plateau may count: where rewards are rare, the few
transitions that tell types apart must be seen several times (LBF: 4 passes found its levels
where the loss alone stopped after 2; 8 passes at the full rate fitted noise instead)."""
EVAL_SAMPLE = 8192
"""Transitions (at most) held out of training, on which convergence is judged."""
HOLDOUT = 0.1
"""Fraction of the transitions (up to EVAL_SAMPLE) held out: judged on data it fits, the encoder
kept improving by memorising it (hundreds of passes over small data) long after it had learned
what tells agents apart."""
INITIAL_LOG_VAR = -6.0
"""Log-variance of every posterior at initialisation (a standard deviation of 0.05): z carries
each identity's code from the first update. Started at the prior's (standard deviation 1), z is
mostly noise at first, the decoder learns to predict without it, and where the observation itself
tells the types apart (C-RWARE's permuted views) they may never enter z: C-RWARE(1) seed 3 at 4000
transitions per agent gave K=1 (two colours, 1.2 noise units apart); started narrow, K=2 (19 apart)."""


class AgentEncoderDecoder(nn.Module):
    """Encoder ``one_hot(i) -> N(mean, diag(exp(log_var)))`` and decoder ``(o, a, z) -> (o', r)``.

    Args:
        n_identities: Size of the one-hot identity (agents times decoys).
        obs_dim: Size of the (flattened, padded) observation.
        act_dim: Size of the action encoding.
        latent_dim: m, size of the embedding.
        hidden_size: Width of the hidden layers (64 in the paper).
    """

    def __init__(self, n_identities: int, obs_dim: int, act_dim: int, latent_dim: int,
                 hidden_size: int) -> None:
        super().__init__()
        self.n_identities = n_identities
        self.encoder = nn.Sequential(
            nn.Linear(n_identities, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 2 * latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(obs_dim + act_dim + latent_dim, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, obs_dim + 1),  # next observation and reward
        )
        with torch.no_grad():
            self.encoder[-1].bias[latent_dim:] = INITIAL_LOG_VAR

    def encode(self, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity indices ``(B,)`` -> mean and log-variance, each ``(B, m)``."""
        first, rest = self.encoder[0], self.encoder[1:]
        # first(one_hot(i)) is column i of its weight plus its bias: a lookup, with no (B, I) one-hot
        # matrix (thousands of identities would make that the largest cost of an update).
        mean, log_var = rest(F.embedding(identity, first.weight.T) + first.bias).chunk(2, dim=-1)
        return mean, log_var

    def forward(self, identity: torch.Tensor, obs_action: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicts ``(B, obs_dim + 1)`` from the concatenated observation and action encoding
        and a reparameterised sample z = mean + std * noise."""
        mean, log_var = self.encode(identity)
        z = mean + torch.exp(0.5 * log_var) * noise
        return self.decoder(torch.cat([obs_action, z], dim=-1)), mean, log_var


@dataclass
class Embeddings:
    """The trained encoder's posterior for every agent and each of its decoys.

    Attributes:
        agent_ids: Agents in ``sorted_agents`` order, one row each below.
        decoy_means: ``(N, S, m)`` posterior means of each agent's S decoys.
        decoy_behaviour: ``(N, S, P * (D + 1))`` the decoder's predictions (next observation and
            reward, in standardised units) at each decoy's mean z, for P probe transitions shared
            by all: the modelled transition and reward function.
        losses: Evaluation loss at every check (every :data:`CHECK_EVERY` updates).
        updates: Gradient updates made.
        converged: Whether training stopped on a plateau (False: it hit ``max_updates``, or a
            fixed number of updates was given).
        seconds: Wall time of the training.
        decoder_state: The decoder's parameters, to start a later fit from (``decoder_init``).
        predictions_per_probe: D + 1, the decoder's outputs for one probe transition (its next
            observation, then its reward): how ``decoy_behaviour`` splits into quantities.
    """

    agent_ids: list[AgentID]
    decoy_means: np.ndarray
    decoy_behaviour: np.ndarray
    losses: list[float] = field(default_factory=list)
    updates: int = 0
    converged: bool = False
    seconds: float = 0.0
    decoder_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    predictions_per_probe: int | None = None

    @property
    def means(self) -> np.ndarray:
        """``(N, m)`` each agent's embedding: the mean over its decoys."""
        return self.decoy_means.mean(axis=1)

    @property
    def behaviour(self) -> np.ndarray:
        """``(N, P * (D + 1))`` each agent's modelled behaviour: the mean over its decoys."""
        return self.decoy_behaviour.mean(axis=1)


def _standardise(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-feature standardisation; statistics only over real (unmasked) entries."""
    mask = np.ones_like(x, bool) if mask is None else mask
    count = np.maximum(mask.sum(0), 1)
    mean = np.where(mask, x, 0).sum(0) / count
    var = np.where(mask, (x - mean) ** 2, 0).sum(0) / count
    return np.where(mask, (x - mean) / np.sqrt(var + 1e-8), 0).astype(np.float32)


def decoy_identities(agent: np.ndarray, n_agents: int, decoys: int = DECOYS) -> np.ndarray:
    """The decoy identity ``agent * decoys + d`` of every transition: decoy ``d`` of an agent
    holds the ``d``-th of ``decoys`` equal, contiguous parts of its transitions in collection order.

    Args:
        agent: ``(T,)`` agent index of every transition.
        n_agents: N.
        decoys: Decoys per agent.

    Returns:
        ``(T,)`` int64 decoy identities in ``0 .. N * decoys - 1``.
    """
    identity = np.empty(len(agent), np.int64)
    for i in range(n_agents):
        rows = np.flatnonzero(agent == i)
        identity[rows] = i * decoys + np.arange(len(rows)) * decoys // max(len(rows), 1)
    return identity


def has_rare_rewards(data: Transitions) -> bool:
    """Whether some agent's reward differs from its most common one in fewer than
    :data:`RARE_REWARDS` of its transitions (then a plateau is :data:`RARE_REWARD_PATIENCE` checks)."""
    return min(events.mean() for events in data.reward_events()) < RARE_REWARDS


def train_encoder(data: Transitions, options: SePSOptions = SePSOptions(),
                  decoder_init: tuple[dict[str, torch.Tensor], int] | None = None) -> Embeddings:
    """Fits the encoder-decoder on the transitions; returns every decoy's posterior and behaviour.

    Loss per transition: squared error of the next observation over the agent's real entries plus
    squared error of the reward, plus ``kl_weight * KL(q(z|i) || N(0, I))``; Adam on random
    minibatches, until converged (``updates="auto"``) or for a given number of updates.

    Args:
        data: Transitions from :func:`rllib_seps.pretraining.rollouts.collect_random_rollouts`.
        options: ``latent_dim``, ``hidden_size``, ``kl_weight``, ``lr``, ``batch_size``,
            ``updates``, ``max_updates``, ``normalize``, ``probe_transitions``, ``seed`` and
            ``progress`` are used.
        decoder_init: An earlier fit's ``decoder_state`` and the number of transitions it was
            fitted on (the first rows of ``data``): the decoder starts from it, and the minimum
            of :data:`MIN_EPOCHS` passes counts only the rows it has not seen.

    Raises:
        ValueError: If an agent has fewer transitions than it has decoys.
    """
    start = time.perf_counter()
    options = options.seeded(None)
    n_agents = len(data.agent_ids)
    counts = np.bincount(data.agent, minlength=n_agents)
    if counts.min() < DECOYS:
        raise ValueError(f"Agent {data.agent_ids[int(counts.argmin())]} has {counts.min()} transitions; "
                         f"the encoder needs at least {DECOYS}. Collect more (transitions_per_agent).")
    row_mask = data.obs_mask[data.agent]
    obs, next_obs, reward = data.obs, data.next_obs, data.reward[:, None]
    if options.normalize:
        obs, next_obs, reward = (_standardise(obs, row_mask), _standardise(next_obs, row_mask),
                                 _standardise(reward))
    identity = torch.as_tensor(decoy_identities(data.agent, n_agents))
    # One table of every row's inputs, targets and target mask: a minibatch is one gather.
    table = torch.as_tensor(np.concatenate(
        [obs, data.action, next_obs, reward, row_mask, np.ones_like(reward)], axis=1, dtype=np.float32))
    n_in, n_out = obs.shape[1] + data.action.shape[1], obs.shape[1] + 1
    obs_act = table[:, :n_in]

    gen = torch.Generator().manual_seed(options.seed)
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(options.seed)
        model = AgentEncoderDecoder(n_agents * DECOYS, obs.shape[1], data.action.shape[1],
                                    options.latent_dim, options.hidden_size)
    if decoder_init is not None:
        model.decoder.load_state_dict(decoder_init[0])
    # foreach: the per-parameter arithmetic of the default loop (same numbers) in fewer calls.
    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr, foreach=True)
    auto = options.updates == "auto"
    max_updates = options.max_updates if auto else options.updates
    if auto:
        # Each plateau divides the rate by 10; the second ends training (see the module docstring).
        patience = RARE_REWARD_PATIENCE if has_rare_rewards(data) else PATIENCE
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, factor=0.1, patience=patience - 1, threshold=THRESHOLD, threshold_mode="abs")
    else:
        # Cosine decay to zero: the last updates settle each z instead of jittering around it.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max_updates)
    shuffled = torch.randperm(len(identity), generator=gen)
    n_eval = min(EVAL_SAMPLE, max(1, int(HOLDOUT * len(identity))))
    eval_rows, train_rows = shuffled[:n_eval], shuffled[n_eval:]
    new_rows = len(train_rows) * (1 - (decoder_init[1] if decoder_init else 0) / len(identity))

    def loss_of(rows: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss to minimise, and the squared errors of next observation and of reward."""
        batch = table[rows]
        inputs, targets, target_mask = batch[:, :n_in], batch[:, n_in:n_in + n_out], batch[:, n_in + n_out:]
        pred, mean, log_var = model(identity[rows], inputs, noise)
        error = (pred - targets) ** 2 * target_mask
        kl = -0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(-1).mean()
        obs_error, reward_error = error[:, :-1].sum(-1).mean(), error[:, -1].mean()
        return obs_error + reward_error + options.kl_weight * kl, obs_error, reward_error

    losses, converged, update = [], False, 0
    bar = tqdm(total=max_updates, desc="SePS encoder", unit="update", disable=not options.progress,
               leave=False, mininterval=1.0)
    while update < max_updates and not converged:
        idx = train_rows[torch.randint(len(train_rows), (options.batch_size,), generator=gen)]
        loss, _, _ = loss_of(idx, torch.randn(len(idx), options.latent_dim, generator=gen))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        update += 1
        if not auto:
            schedule.step()
        if update % CHECK_EVERY == 0 or update == max_updates:
            with torch.no_grad():  # at each identity's mean z: a deterministic, smooth signal
                loss, obs_error, reward_error = loss_of(eval_rows, torch.zeros(len(eval_rows), options.latent_dim))
            losses.append(float(loss))
            if auto and update * options.batch_size >= MIN_EPOCHS * new_rows:
                # Both parts must settle: where rewards are rare their error is a small part of the
                # loss, and the types that differ only in them are learned last.
                # Per standardised target; an error below FITTED of the target's variance counts as
                # fitted, whatever its relative progress.
                per_obs = obs_error / data.obs_mask.sum(1).mean()
                schedule.step(float(torch.log(per_obs + FITTED) + torch.log(reward_error + FITTED)))
                converged = schedule.get_last_lr()[0] < options.lr * 0.5 * 0.1 ** (PLATEAUS - 1)
            bar.update(update - bar.n)
    bar.close()

    with torch.no_grad():
        mean, _ = model.encode(torch.arange(n_agents * DECOYS))
        masks = torch.as_tensor(np.repeat(data.obs_mask, DECOYS, axis=0))
        behaviour = _behaviour(model, obs_act, mean, masks, gen, options.probe_transitions)
    return Embeddings(agent_ids=list(data.agent_ids),
                      decoy_means=mean.numpy().reshape(n_agents, DECOYS, -1),
                      decoy_behaviour=behaviour.numpy().reshape(n_agents, DECOYS, -1),
                      losses=losses, updates=update, converged=converged,
                      seconds=time.perf_counter() - start,
                      decoder_state={k: v.clone() for k, v in model.decoder.state_dict().items()},
                      predictions_per_probe=obs.shape[1] + 1)


def _behaviour(model: AgentEncoderDecoder, obs_act: torch.Tensor, means: torch.Tensor,
               obs_masks: torch.Tensor, gen: torch.Generator, n_probe: int) -> torch.Tensor:
    """Decoder predictions at every identity's mean z for the same probe inputs: ``(I, P * (D+1))``.

    Predicted entries outside an identity's own observation (padding, never in its loss) are
    zeroed: they say nothing about the agent, and unconstrained they would only add noise.
    """
    probe = obs_act[torch.randperm(len(obs_act), generator=gen)[:n_probe]]
    rows = []
    for chunk, masks in zip(means.split(256), obs_masks.split(256)):  # bounds memory
        n, p = len(chunk), len(probe)
        inputs = torch.cat([probe[None].expand(n, p, -1), chunk[:, None, :].expand(n, p, -1)], dim=-1)
        keep = torch.cat([masks, torch.ones(n, 1, dtype=torch.bool)], dim=1)[:, None, :]
        rows.append((model.decoder(inputs) * keep).reshape(n, -1))
    return torch.cat(rows)
