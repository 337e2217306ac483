"""SePS pretraining end to end: random rollouts -> encoder -> clusters, timed and reported.

With ``transitions_per_agent="auto"`` the data follows the problem: a first round of
``first_transitions_per_agent`` per agent (and of the episodes a confident decision needs), then,
while the decision for K is not confident, two to four times as many (the encoder is fitted anew
on all of it, its decoder starting from the last fit's), up to ``max_transitions_per_agent``. A decision is confident when
:mod:`rllib_seps.pretraining.clustering` says so, the agents' behaviour is known to within
``resolution`` (else a finer split may hide below the noise: BPS(1) at 1000 transitions per agent
merged two colours for one seed in five), and each half of every agent's transitions has shown
``min_reward_events`` rewards other than its most common one (the halves must agree, and types
that differ only in rare rewards show in neither half before).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rllib_seps.options import SePSOptions
from rllib_seps.pretraining.clustering import Clustering, cluster_agents
from rllib_seps.pretraining.encoder import DECOYS, Embeddings, train_encoder
from rllib_seps.pretraining.rollouts import EnvCreator, Transitions, collect_random_rollouts, rollout_plan
from rllib_seps.sharing.mapping import AgentID, AgentToModuleMapping, cluster_module_id

EPISODES_PER_DECOY = 2
"""Episodes each decoy's data must span before a decision can be confident: within an episode
an agent's steps are correlated (its place in the world), and decoys cut from one episode would
share that, looking more alike than two agents' data (KAZ at 1000 steps per agent, about one
episode: a false split that vanished with 4 episodes)."""
_ROUND_SEED = 104_729  # seed offset of each further round of rollouts (a prime, far from task offsets)


@dataclass
class Round:
    """One round of data collection, fitting and decision.

    Attributes:
        transitions_per_agent: Transitions per agent (the fewest of any agent) so far.
        updates: Encoder updates of this round's fit.
        k: K decided on this round's data.
        confident: Whether that decision was confident.
        noise_rms: The noise of an agent's behaviour estimate (see ``Clustering.noise_rms``).
        seconds: Wall time of ``rollouts``, ``encoder`` and ``clustering`` in this round.
    """

    transitions_per_agent: int
    updates: int
    k: int
    confident: bool
    noise_rms: float
    seconds: dict[str, float]


@dataclass
class PretrainingResult:
    """What pretraining found.

    Attributes:
        agent_ids: Agents in ``sorted_agents`` order (rows of ``embeddings``, entries of ``labels``).
        embeddings: The last encoder fit's per-agent (and per-decoy) posteriors.
        clustering: The clusters and how K was chosen.
        transitions: Transitions used, per agent.
        timings: Seconds spent in ``rollouts``, ``encoder``, ``clustering`` (summed over rounds)
            and ``total``.
        options: The options pretraining ran with.
        rounds: Every round of the data budget, in order.
        reward_events: Per agent, transitions whose reward differs from the agent's most common one.
        episodes: Per agent, how many episodes its transitions come from.
        confident: Whether the final decision is confident (else it warned).
        execution: How the agents run, ``"fast"`` or ``"modules"`` (set by ``with_sharing``).
        adaps_masks: For strategy ``adaps``: the masks' densities and overlaps
            (:func:`rllib_seps.sharing.adaps.mask_report`), set by ``with_sharing``; else None.
    """

    agent_ids: list[AgentID]
    embeddings: Embeddings
    clustering: Clustering
    transitions: dict[AgentID, int]
    timings: dict[str, float]
    options: SePSOptions = field(default_factory=SePSOptions)
    rounds: list[Round] = field(default_factory=list)
    reward_events: dict[AgentID, int] = field(default_factory=dict)
    episodes: dict[AgentID, int] = field(default_factory=dict)
    confident: bool = True
    execution: str | None = None
    adaps_masks: dict[str, Any] | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.clustering.labels

    @property
    def mapping(self) -> AgentToModuleMapping:
        """``cluster_k`` module of every agent."""
        return AgentToModuleMapping({a: cluster_module_id(int(c))
                                     for a, c in zip(self.agent_ids, self.labels)})

    def summary(self) -> dict[str, Any]:
        """JSON-ready report: options, mapping, how K was chosen, data and compute used. Agent ids
        are written as strings where they are keys."""
        mapping = self.mapping
        clustering = self.clustering
        summary = {
            "options": self.options.to_dict(),
            "n_agents": len(self.agent_ids),
            "k": clustering.k,
            "confident": self.confident,
            "k_reason": clustering.reason,
            "k_criterion": clustering.criterion,
            "candidates": {str(k): c.as_dict() for k, c in clustering.candidates.items()},
            "noise_rms": clustering.noise_rms,
            "noise_per_agent": {str(a): n for a, n in zip(self.agent_ids, np.asarray(clustering.noise).tolist())},
            "spread_in_noise_units": clustering.spread,
            "clusters": {m: mapping.agents_of(m) for m in mapping.module_ids},
            "cluster_sizes": {m: len(mapping.agents_of(m)) for m in mapping.module_ids},
            "mapping": {str(a): m for a, m in mapping.agent_to_module.items()},
            "transitions_total": int(sum(self.transitions.values())),
            "transitions_per_agent": int(min(self.transitions.values())),
            "reward_events_min": int(min(self.reward_events.values(), default=0)),
            "episodes_min": int(min(self.episodes.values(), default=0)),
            "rounds": [vars(r) for r in self.rounds],
            "encoder_updates": self.embeddings.updates,
            "encoder_converged": self.embeddings.converged,
            "encoder_losses": self.embeddings.losses,
            "timings_s": self.timings,
            "embedding_means": {str(a): m.tolist() for a, m in zip(self.agent_ids, self.embeddings.means)},
        }
        if self.execution is not None:
            summary["execution"] = self.execution
        if self.adaps_masks is not None:
            summary["adaps_masks"] = self.adaps_masks
        return summary


def reward_events(data: Transitions) -> dict[str, int]:
    """Per agent, how many transitions have a reward other than its most common one, in the half
    of its transitions (the first or the second, as the decision's halves test splits them) that
    has fewer."""
    return {agent: int(min(half.sum() for half in np.array_split(events, 2)))
            for agent, events in zip(data.agent_ids, data.reward_events())}


def run_pretraining(env_creator: EnvCreator, env_config: dict | None = None,
                    options: SePSOptions = SePSOptions()) -> PretrainingResult:
    """Collects random rollouts, trains the encoder-decoder and clusters the agents, collecting
    more data while the decision is not confident (``transitions_per_agent="auto"``).

    Args:
        env_creator: Callable ``env_config -> MultiAgentEnv``.
        env_config: Passed to the creator.
        options: Pretraining and clustering options.

    Returns:
        The result; the same seed gives the same clusters. A decision that is still not
        confident at the end warns, naming the option that buys more certainty.

    Raises:
        ValueError: If a given ``n_clusters`` is larger than the number of agents.
    """
    start = time.perf_counter()
    options = options.seeded(None)
    auto = options.transitions_per_agent == "auto"
    target = options.first_transitions_per_agent if auto else options.transitions_per_agent
    data, rounds = None, []
    totals = dict.fromkeys(("rollouts", "encoder", "clustering"), 0.0)
    while True:
        have = 0 if data is None else int(np.bincount(data.agent).min())
        have_episodes = 0 if data is None else int(data.episodes.min())
        # The automatic budget also collects the episodes a confident decision needs: C-RWARE's
        # 500-step episodes give 2 in 1000 transitions, and a first round of them decides nothing.
        # In-process time expected at the last round's pace (none known in the first round).
        expected = rounds[-1].seconds["rollouts"] * (target - have) / max(new_last, 1) if rounds else 0.0
        streams, remote = rollout_plan(options.rollout_tasks, expected)
        more = collect_random_rollouts(
            env_creator, env_config, transitions_per_agent=target - have,
            seed=options.seed + _ROUND_SEED * len(rounds), streams=streams, remote=remote,
            progress=options.progress,
            min_episodes=max(DECOYS * EPISODES_PER_DECOY - have_episodes, 0) if auto else 0,
            max_transitions_per_agent=options.max_transitions_per_agent - have,
        )
        new_last = int(np.bincount(more.agent).min())
        data = more if data is None else data.extended(more)
        if options.n_clusters != "auto" and options.n_clusters > len(data.agent_ids):
            raise ValueError(f"n_clusters={options.n_clusters} is larger than the number of agents "
                             f"({len(data.agent_ids)}) in the environment.")
        # One thread: these networks are tiny, and thread hand-offs cost more than they save.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            # The decoder goes on from the last fit's; the encoder starts afresh (train_encoder).
            warm = (embeddings.decoder_state, len(data) - len(more)) if rounds else None
            embeddings = train_encoder(data, options, warm)
        finally:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        clustering = cluster_agents(embeddings, options.n_clusters, cluster_on=options.cluster_on,
                                    k_criterion=options.k_criterion, max_clusters=options.max_clusters,
                                    seed=options.seed)
        seconds = {"rollouts": more.seconds, "encoder": embeddings.seconds,
                   "clustering": time.perf_counter() - t0}
        events = reward_events(data)
        counts = data.per_agent_counts()
        # A given K is no decision of ours: it needs no precision, nor rare rewards, to be confident.
        given = options.n_clusters != "auto"
        precise = given or clustering.noise_rms <= options.resolution
        enough_events = given or min(events.values()) >= options.min_reward_events
        enough_episodes = int(data.episodes.min()) >= DECOYS * EPISODES_PER_DECOY
        decided = enough_episodes and clustering.confident and precise
        needed = _transitions_for_events(events, counts, options)
        # Rewards so rare that the cap cannot buy min_reward_events of them: more data is no help.
        # Then types found in the dynamics stand; K=1 may hide types that differ in rewards only.
        hopeless = needed > options.max_transitions_per_agent
        confident = decided and (enough_events or (hopeless and clustering.k > 1))
        rounds.append(Round(min(counts.values()), embeddings.updates, clustering.k, confident,
                            clustering.noise_rms, seconds))
        for key, value in seconds.items():
            totals[key] += value
        target = max(target, min(counts.values()))  # episodes may have asked for more
        if confident or (decided and hopeless) or not auto or target >= options.max_transitions_per_agent:
            break
        # Twice the data, or up to four times where the rate of rare rewards or the fall of the
        # noise (as 1 / sqrt(n)) says that is what the missing evidence takes.
        wanted = max(needed if not enough_events else 0,
                     target * (clustering.noise_rms / options.resolution) ** 2,
                     target * DECOYS * EPISODES_PER_DECOY / max(int(data.episodes.min()), 1))
        target = int(min(max(2 * target, min(wanted, 4 * target)), options.max_transitions_per_agent))
    result = PretrainingResult(data.agent_ids, embeddings, clustering, data.per_agent_counts(),
                               {**totals, "total": time.perf_counter() - start}, options, rounds, events,
                               dict(zip(data.agent_ids, data.episodes.tolist())), confident)
    if not confident:
        warnings.warn(_low_confidence_message(result), stacklevel=2)
    return result


def _transitions_for_events(events: dict[AgentID, int], counts: dict[AgentID, int], options: SePSOptions) -> int:
    """Transitions per agent at which each half of every agent's would have min_reward_events, at
    the rates seen so far (one event added to each count, so that none seen is no rate of zero)."""
    rate = min((events[a] + 1) / (counts[a] / 2 + 1) for a in events)
    return int(np.ceil(2 * options.min_reward_events / rate))


def _low_confidence_message(result: PretrainingResult) -> str:
    options, clustering = result.options, result.clustering
    have = min(result.transitions.values())
    events = min(result.reward_events.values())
    if result.transitions and min(result.episodes.values()) < DECOYS * EPISODES_PER_DECOY:
        why = (f"some agent's data spans only {min(result.episodes.values())} episodes, and the "
               f"decision needs {DECOYS * EPISODES_PER_DECOY} ({EPISODES_PER_DECOY} for each of its "
               f"{DECOYS} decoys) to measure its own noise")
    elif clustering.confident and clustering.noise_rms > options.resolution:
        why = (f"the agents' behaviour is known only to within {clustering.noise_rms:.3f} "
               f"(resolution={options.resolution}), so a finer split may hide below the noise")
    elif clustering.confident:
        rarest = min(result.reward_events, key=result.reward_events.get)
        needed = _transitions_for_events(result.reward_events, result.transitions, options)
        seen = "the agents look alike, but " if clustering.k == 1 else ""
        why = (f"{seen}rewards other than an agent's most common one are rare under random actions "
               f"({rarest} saw {events} in the leaner half of its {result.transitions[rarest]} "
               f"transitions; min_reward_events={options.min_reward_events} in each half would take "
               f"about {needed} per agent), and agents that differ only in such rewards cannot be "
               f"told apart yet. Set min_reward_events=0 to accept K={clustering.k} on what was seen")
    else:
        why = clustering.reason
    if options.transitions_per_agent == "auto":
        fix = (f"raise max_transitions_per_agent (now {options.max_transitions_per_agent}; "
               f"{have} transitions per agent were used)")
    else:
        fix = f'set transitions_per_agent="auto" or more than {have}'
    if not result.embeddings.converged and options.updates == "auto":
        fix += f", and max_updates (now {options.max_updates}: the encoder did not converge)"
    return f"SePS chose K={clustering.k} with low confidence: {why.rstrip('.')}. For more certainty, {fix}."
