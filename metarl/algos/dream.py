"""DREAM (Liu, Raghunathan, Liang, Finn 2021): decoupled exploration and exploitation, on the
two-phase trials of `metarl.envs.dream_grid` (an exploration episode, then exploitation episodes
with an instruction).

- The exploitation policy pi(a | s, instruction, z) (an MLP actor-critic) reads a task embedding z:
  in a fraction `id_fraction` (1/2) of the training trials z = f(task id) + `noise` (0.1) N(0, 1),
  f a learned table [ids, `embed_dim`] with the bottleneck penalty max(||f(id)||^2, `bottleneck`
  (10)); in the others, and always at test, z = stop_gradient(g(tau)), the decoder's embedding of the
  trial's exploration episode. pi and f learn from the exploitation rewards (PPO).
- The decoder g reads the exploration episode's transitions (s, one-hot a, s') and is trained by
  ||g(tau_:t) - stop_gradient(f(id))||^2 at every step t of the exploration episode, on the update's
  own trials and on as many drawn from a reservoir of `decoder_replay` exploration episodes kept
  uniformly over the whole run (the "posterior" preset: 16,384; the "paper" preset: none). `decoder`:
  "posterior" (the "posterior" preset's: each transition adds learned evidence, Dense 64 -> 128 ->
  logits over the training ids, and g is the mean of f under the softmax of the summed evidence)
  or "gru" (the paper's: Dense 64 -> GRU `decoder_hidden` (128) -> 128 -> `embed_dim`).
- The exploration policy (a recurrent actor-critic, GRU `explorer_hidden`, over (s, previous action,
  previous reward); it sees no instruction) is rewarded by information gain: at step t,
  d_t - d_{t+1} - `info_penalty` (0.1), d_t = ||g(tau_:t) - f(id)||^2 (gradients stopped), by PPO.

Learner: PPO for both policies (the reference trains recurrent dueling double DQNs with sequence
replay; PPO on whole trials is what this package's recurrent machinery runs fast, and the method's
parts, the bottleneck, the decoder and the information-gain reward, are the reference's), or with
`exploit_learner="dqn"` (the `held-out-dqn` and `held-out-dqn-late` presets, DREAM's choices on cooking and distraction) a dueling double DQN
for the exploitation policy: the same MLP's two heads as Q = v + a - mean(a), acting
epsilon-greedily (or, with `exploit_temperature`, by softmax(Q / temperature) first: Boltzmann
exploration tries the near-tied actions where the learner has not found the next sub-goal),
learning from a ring of the run's last `dqn_buffer` exploitation transitions
(each with its id, whether its trial read the id, and the decoder's z it exploited with) in every
gradient step of the update beside the other losses, its target the parameters the update started
from. PPO's exploitation learner never learns cooking's chain (pick up, carry, drop, twice): it
takes the first sub-goal's +0.25 and then ends the episode, wanders or drops to no end
(benchmarks/dream_exploit_trace.py). One
`update` = `trials_per_update` whole trials (the one rollout primitive over `Trial(env, episodes)`,
every trial on a fresh training task), the rewards relabelled with the decoder, GAE (exploration and
exploitation are separate episodes), then `epochs` passes of `minibatches` gradient steps each on
the sum of both PPO losses, the decoder loss and the bottleneck. jittable and vmappable over seeds.

Choices that make it learn here (measured on city, one seed each): the grid observations are
one-hot per entry (`one_hot_obs`, as the reference's embedding tables; with raw coordinates the
decoder's loss stayed at ||f||^2); for the first `explore_full_steps` (1M) env steps the explorer
cannot end its episode while its epsilon decays 1 -> 0 over `explore_epsilon_steps` (1M): the
information gain is zero until the decoder has learned, so an on-policy explorer otherwise learns
end_episode (it saves the step cost) before the decoder has data; the decoder's reservoir and its
posterior form. An explorer is paid only for rides its decoder can read: a decoder trained on its
own explorer's recent episodes forgets the rides the explorer stopped taking, and a GRU decoder
reads only the combinations of rides it has seen (benchmarks/dream_decoder_probe.py). With the
GRU and no reservoir the explorer settled on one or two buses (greedy 0.47 over 3 seeds at 2M);
with both, it rides three, the decoder's error after exploring is 0.02 of ||f||^2 = 9.9, and the
greedy exploitation return 0.67 (one seed; full information 0.8, no information 0.3).
benchmarks/dream_compare.py has the numbers on held-out ids. On the families scored on held-out ids
(distraction, cooking) the presets' decoder-reading training trials exploit with the posterior over
the training ids other than the trial's own (`leave_one_out_exploit`): a held-out id's z is a blend
of the training ids' f, which the exploitation otherwise never meets (distraction, 3 seeds x 2M,
held out: 0.559 -> 0.769; cooking's test id: -0.286 -> 0.183 with Boltzmann exploration as well).
On cooking f is also a sum of one learned part per drawer's ingredient (`id_factored`), so that
those blends are sums of parts the test id shares: 0.464 held out at 2M (dream_compare) and at 3M,
every seed (optimum 0.467).

The agent (`DreamAgent`) never reads the task: at test time its exploitation policy reads the
decoder's z, which it computes from what it observed while exploring.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from metarl.agents import Agent
from metarl.algos.base import InContextAlgorithm, TrainState, adamw, agent_from_config, minibatch_epochs, register, sampled_actions
from metarl.envs.dream_grid import END_EPISODE, one_hot_observation
from metarl.envs.trial import TimeStep
from metarl.nets.init import orthogonal  # not Flax's: its batched QR deadlocks under vmap (metarl.nets.init)
from metarl.errors import ConfigError, check_float, check_int
from metarl.ops.gae import generalized_advantage_estimation
from metarl.ops.ppo import clipped_value_loss, entropy_from_logits, masked_mean, ppo_clipped_policy_loss, standardise
from metarl.rollout import rollout


def information_gain(g, f, penalty):
    """The exploration reward of one trial: g [T, d] the decoder's embedding before each step's
    transition is read (g[t] = g(tau_:t)), f [d] the task's id embedding. Step t pays
    d_t - d_{t+1} - penalty, d_t = ||g[t] - f||^2: how much its transition brought the decoder
    closer to the id, less a cost for the step (the last step's d_{t+1} is its own d_t)."""
    distance = jnp.sum(jnp.square(g - f), axis=-1)
    distance_next = jnp.concatenate([distance[1:], distance[-1:]])
    return distance - distance_next - penalty


def mix_uniform(logits: jax.Array, epsilon) -> jax.Array:
    """The log-probabilities of acting by `logits` w.p. 1 - epsilon and uniformly at random otherwise."""
    return jnp.log((1.0 - epsilon) * jax.nn.softmax(logits) + epsilon / logits.shape[-1])


def reads_exploration(timestep: TimeStep) -> jax.Array:
    """Whether the transition that led to this step belongs to the exploration episode (the decoder
    reads it): every exploring step but the trial's first, and the first exploitation step."""
    return ~timestep.first & ((timestep.episode_index == 0) | ((timestep.episode_index == 1) & timestep.done))


def dueling(advantage: jax.Array, value: jax.Array) -> jax.Array:
    """Dueling Q-values [..., A] from the action head [..., A] and the value head [...]: v + a - mean(a)."""
    return value[..., None] + advantage - jnp.mean(advantage, axis=-1, keepdims=True)


DECODERS = ("gru", "posterior")
EXPLOIT_LEARNERS = ("ppo", "dqn")


@dataclasses.dataclass(frozen=True)
class DreamConfig:
    """DREAM settings (PPO learners)."""

    #: whole trials per update. 512 (in 32 minibatches of 16 trials): with 128 (8 minibatches) the
    #: exploitation learner levelled off at 0.55 on city even reading f(id) (optimum 0.8), with 512
    #: it reached 0.70 (sampled; greedy 0.73) and DREAM on map 0.76 (sampled) in 2M steps (one seed each)
    trials_per_update: int = 512
    epochs: int = 4  #: passes over the update's trials
    minibatches: int = 32  #: gradient steps per pass (trials_per_update must divide by it)
    lr: float = 1e-3  #: Adam learning rate
    #: decay the learning rate linearly to 0 over this many updates (None: the run's own length, set by
    #: the host loop; 0: constant). With a constant 1e-3 the greedy exploitation return on map peaked
    #: near 0.70 at 1.2-1.7M steps and fell to 0.57 by 2M (3 seeds); decayed over the run, 0.75 at 2M
    lr_decay_updates: int | None = None
    max_grad_norm: float = 1.0  #: clip gradients to this global norm (0: no clipping)
    gamma: float = 0.99  #: discount within an episode
    gae_lambda: float = 0.95  #: GAE lambda
    clip_eps: float = 0.2  #: PPO ratio clip range
    ent_coef: float = 0.01  #: entropy bonus of both policies
    vf_coef: float = 0.5  #: value loss coefficient
    embed_dim: int = 32  #: size of z (the reference: 64)
    noise: float = 0.1  #: std of the noise added to f(id)
    bottleneck: float = 10.0  #: the penalty max(||f(id)||^2, bottleneck)
    bottleneck_coef: float = 1.0  #: weight of the bottleneck penalty
    decoder_coef: float = 1.0  #: weight of the decoder loss
    info_penalty: float = 0.1  #: per-step cost in the information-gain reward
    #: the cost is `info_penalty` x (the update's mean ||f(id)||^2) / 10: in proportion to what there
    #: is to learn, as with ||f||^2 held near 10 by the bottleneck (for an f that stays smaller: with
    #: `id_init` 0 on distraction ||f||^2 is 0.8 at 2M, and a fixed 0.1 a step left the explorer
    #: nothing worth a ride)
    info_penalty_relative: bool = False
    id_fraction: float = 0.5  #: training trials whose exploitation reads f(id) instead of g(tau)
    explorer_hidden: int = 64  #: the exploration policy's GRU units
    decoder_hidden: int = 128  #: the decoder's GRU units
    exploit_hidden: tuple[int, ...] = (128, 128)  #: the exploitation MLP's hidden widths
    #: the exploration policy acts uniformly at random w.p. epsilon, 1 decaying linearly to
    #: `explore_epsilon_end` over this many env steps (the reference's DQN explorer: 1 -> 0.01 over
    #: 250k steps): without it the explorer learns to end its episode before the decoder can learn
    explore_epsilon_steps: int = 1_000_000
    explore_epsilon_end: float = 0.0
    #: the exploitation policy acts uniformly at random w.p. epsilon, 1 decaying linearly to 0 over
    #: this many env steps (0: never; the reference's DQN exploitation learner: 1 -> 0.01 over 250k)
    exploit_epsilon_steps: int = 0
    #: for this many env steps at the start of training the explorer cannot end its episode (it
    #: walks all `max_steps`): the information gain is zero until the decoder has learned, so a PPO
    #: explorer otherwise learns end_episode (which saves the step cost) before the decoder has data
    explore_full_steps: int = 1_000_000
    one_hot_obs: bool = True  #: one-hot each grid observation entry (as the reference's embedding tables)
    #: the decoder also learns, every update, from `trials_per_update` exploration episodes drawn from
    #: a reservoir of this many (a uniform sample of every exploration episode of the run; 0: none):
    #: an on-policy decoder forgets the rides its explorer has stopped taking, so riding them again
    #: pays no information gain (the reference trains its decoder from a replay buffer of 16,000)
    decoder_replay: int = 0
    #: the decoder g: "gru" (the paper's: the transitions through a GRU, then 128 -> embed_dim) or
    #: "posterior" (each transition adds its learned evidence, logits over the training ids, and
    #: g = the posterior's mean of f over them: a ride read alone is read in any combination).
    #: On city (one seed, 2M steps, with the reservoir) the GRU decoder read the two rides its
    #: explorer took and nothing else (greedy 0.50); the posterior one reads any rides, the explorer
    #: learns to ride three buses and the decoder's error falls to 0.02 (greedy 0.67). The "posterior"
    #: preset uses it with a reservoir of 16,384; the config's own defaults are the paper's decoder
    #: without one (the "paper" preset, and what run folders written before these options ran)
    decoder: str = "gru"
    #: the std of f's initial entries. The reference's N(0, 1) table starts f with a random part that
    #: tells every id apart, task-relevant or not, and the bottleneck max(||f||^2, 10) leaves it in
    #: place: on distraction the explorer is then paid for riding the distracting buses, and what it
    #: learns on the training ids does not hold on held-out ones. 0: every row starts the same
    #: (the "held-out" preset)
    id_init: float = 1.0
    #: f(id) = `id_scale` x the table's row: Adam moves every entry about lr a step whatever its
    #: gradient's size, so this multiplies how fast f can grow (from `id_init` 0 it grows only where
    #: the exploitation rewards push it)
    id_scale: float = 1.0
    #: f(id) = the sum of one learned table per component of the id (the family's `id_factors`:
    #: cooking's three drawers' ingredients, distraction's helpful and distracting bus permutations)
    #: instead of one row per id; each table starts with entries of std `id_init` / sqrt(components).
    #: An id never trained on (cooking's test id) then has an f made of parts the training ids
    #: share, and the mixtures of training ids' f a held-out id's exploration decodes to are sums of
    #: those parts. The reference's IDEmbedder embeds each component of an id this way (its cooking
    #: id has one component)
    id_factored: bool = False
    #: the exploitation learner: "ppo" (the policy head, on the update's own trials) or "dqn" (the
    #: reference's kind: a dueling double Q-network on the same MLP, Q = v + a - mean(a), learning
    #: from a replay of `dqn_buffer` exploitation transitions, `dqn_batch` of them per trial row in
    #: each of the update's gradient steps, its target the parameters the update started from,
    #: acting epsilon-greedily, epsilon 1 -> `exploit_epsilon_end` over `exploit_epsilon_steps`).
    #: On cooking a PPO learner reading f(id) takes the first sub-goal's +0.25 and then ends the
    #: episode, wanders or drops to no end: it never cooks (benchmarks/dream_exploit_trace)
    exploit_learner: str = "ppo"
    exploit_epsilon_end: float = 0.0  #: the exploitation policy's final epsilon (see `exploit_epsilon_steps`)
    #: ("dqn" learner) training trials act by softmax(Q / temperature) instead of argmax Q (then
    #: epsilon's mixture as before; 0: argmax). Where the Q-values are near tied, as where the learner
    #: has not found what to do, this tries the tied actions; where one action stands clear it acts
    #: greedily. The test policy is greedy either way
    exploit_temperature: float = 0.0
    dqn_buffer: int = 102_400  #: exploitation transitions the "dqn" learner's replay ring keeps
    dqn_batch: int = 32  #: replayed transitions per trial of a minibatch (16 trials by default: 512 per gradient step)
    dqn_coef: float = 1.0  #: weight of the Q-learning loss (Huber) beside the other losses
    #: further gradient steps of the Q-learning loss alone after the update's others, each on
    #: `dqn_batch` x (trials per minibatch) replayed transitions, with their own Adam (the learning rate and its decay
    #: the same), the target re-set to the current parameters every `dqn_target_every` of them.
    #: The update's shared steps are few (4 x 32): Q-values back up one step of the cooking chain
    #: per target; these are an MLP's, cheap beside the recurrent replay of the shared ones
    dqn_steps: int = 0
    dqn_target_every: int = 128
    #: replayed transitions in each Q-learning-only step (0: as many as a shared step replays,
    #: `dqn_batch` x trials per minibatch). Values back up one step of a chain per target network,
    #: so many small steps can go further than a few large ones for the same compute
    dqn_only_batch: int = 0
    #: the "dqn" learner's targets are n-step returns (Rainbow's): each replayed transition carries
    #: the discounted rewards of its next `dqn_nstep` steps (fewer where the episode ends) and the
    #: observation after them, bootstrapped with gamma^n: a value backs up n steps per target
    #: network instead of one. On cooking (held-out-dqn, one seed x 2M) 3 steps did worse: the training
    #: ids' greedy return reading f(id) -0.70 (1 step: -0.28 for the same seed); the returns of the
    #: replay's older, more random behaviour make pessimistic targets
    dqn_nstep: int = 1
    #: (posterior decoder) the explorer's information gain read from the posterior over the
    #: training ids other than the trial's own: the decoder's error as on an id it has never seen,
    #: which is what a held-out id is. On distraction the full posterior pays a ride on a
    #: distracting bus (the split ties each distracting permutation to 2-3 helpful ones, so it
    #: narrows down the training id); left out, that ride points at training ids of other helpful
    #: permutations and costs information, while a helpful ride points at the ids that share the
    #: trial's helpful permutation (every one of distraction's has 2 or 3 training ids)
    leave_one_out_reward: bool = False
    #: (posterior decoder) the decoder's loss on the same left-out posterior: its evidence learns
    #: to point at the ids that share what f encodes, as on a held-out id
    leave_one_out_decoder: bool = False
    #: (posterior decoder) the exploitation policy of the training trials that read the decoder
    #: reads the left-out posterior too: it learns to act on z as it comes on a held-out id (a
    #: mixture of the f of the training ids that agree with the exploration), not on its own id's f
    leave_one_out_exploit: bool = False
    #: (posterior decoder) in each training trial that reads the decoder, every training id is also
    #: left out of the exploitation's posterior w.p. this (drawn per trial; the decoder's loss and the
    #: explorer's reward keep the full posterior): the exploitation meets the posterior's blends of
    #: training ids in many weightings, not only the one its decoder gives each training id. A
    #: held-out id's z is such a blend, and its weights differ from seed to seed
    exploit_id_dropout: float = 0.0

    def __post_init__(self):
        o = "dream"
        for name in ("trials_per_update", "epochs", "minibatches", "embed_dim", "explorer_hidden", "decoder_hidden"):
            check_int(o, name, getattr(self, name), low=1, high=1_000_000)
        check_float(o, "lr", self.lr, low=0.0, low_open=True)
        if self.lr_decay_updates is not None:
            check_int(o, "lr_decay_updates", self.lr_decay_updates, low=0)
        if self.trials_per_update % self.minibatches:
            raise ConfigError(f"dream: trials_per_update ({self.trials_per_update}) must be a multiple of minibatches ({self.minibatches})")
        for name in ("id_init", "id_scale", "max_grad_norm", "noise", "bottleneck", "bottleneck_coef", "decoder_coef", "info_penalty", "ent_coef", "vf_coef"):
            check_float(o, name, getattr(self, name), low=0.0)
        check_int(o, "explore_epsilon_steps", self.explore_epsilon_steps, low=0)
        check_int(o, "explore_full_steps", self.explore_full_steps, low=0)
        check_int(o, "exploit_epsilon_steps", self.exploit_epsilon_steps, low=0)
        check_int(o, "decoder_replay", self.decoder_replay, low=0, high=10_000_000)
        if self.exploit_learner not in EXPLOIT_LEARNERS:
            raise ConfigError(f"dream: exploit_learner must be one of {', '.join(EXPLOIT_LEARNERS)}, got {self.exploit_learner!r}", "exploit_learner")
        check_int(o, "dqn_buffer", self.dqn_buffer, low=1, high=10_000_000)
        check_int(o, "dqn_batch", self.dqn_batch, low=1, high=65536)
        check_float(o, "dqn_coef", self.dqn_coef, low=0.0)
        check_int(o, "dqn_steps", self.dqn_steps, low=0, high=100_000)
        check_int(o, "dqn_target_every", self.dqn_target_every, low=1, high=100_000)
        check_int(o, "dqn_only_batch", self.dqn_only_batch, low=0, high=1_000_000)
        check_int(o, "dqn_nstep", self.dqn_nstep, low=1, high=1000)
        check_float(o, "exploit_temperature", self.exploit_temperature, low=0.0)
        if self.exploit_temperature and self.exploit_learner != "dqn":
            raise ConfigError("dream: exploit_temperature needs the Q-learning exploitation learner (exploit_learner=\"dqn\")", "exploit_temperature")
        if self.dqn_steps % self.dqn_target_every:
            raise ConfigError(f"dream: dqn_steps ({self.dqn_steps}) must be a multiple of dqn_target_every ({self.dqn_target_every})", "dqn_steps")
        if self.decoder not in DECODERS:
            raise ConfigError(f"dream: decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}", "decoder")
        check_float(o, "exploit_id_dropout", self.exploit_id_dropout, low=0.0, high=1.0, high_open=True)
        for name in ("leave_one_out_reward", "leave_one_out_decoder", "leave_one_out_exploit", "exploit_id_dropout"):
            if getattr(self, name) and self.decoder != "posterior":
                raise ConfigError(f"dream: {name} needs the posterior decoder (decoder=\"posterior\"), got {self.decoder!r}", name)
        for name in ("gamma", "gae_lambda", "id_fraction", "explore_epsilon_end", "exploit_epsilon_end"):
            check_float(o, name, getattr(self, name), low=0.0, high=1.0)
        check_float(o, "clip_eps", self.clip_eps, low=0.0, low_open=True)
        object.__setattr__(self, "exploit_hidden", tuple(self.exploit_hidden))
        for width in self.exploit_hidden:
            check_int(o, "exploit_hidden", width, low=1, high=65536)


PRESETS: dict[str, DreamConfig] = {
    # what `metarl train dream` runs on city and map (its choice there: `preset="default"` means
    # the preset the algorithm chooses for the family, this one only where it chooses it)
    "posterior": DreamConfig(decoder="posterior", decoder_replay=16384),
    # families scored on held-out ids (distraction, cooking): f starts at one shared row, so it grows
    # only where the exploitation rewards push it and does not tell the distracting buses apart;
    # distraction, 3 seeds x 2M, held out: 0.48, 0.49, 0.48 against 0.43, 0.37, 0.42 with "posterior"
    "held-out": DreamConfig(decoder="posterior", decoder_replay=16384, id_init=0.0, info_penalty_relative=True),
    # cooking: "held-out" with the DQN exploitation learner (epsilon 1 -> 0.01 over 250k steps, as the
    # reference's) and 128 Q-learning-only steps per update. PPO's exploitation, even reading f(id),
    # stops after the first sub-goal and never cooks. One seed x 2M, greedy on the test id: -0.72 without
    # the Q-only steps (3 seeds: -0.58; PPO's -1.56), -0.23 with them (1.65x the training time).
    # Boltzmann exploration (exploit_temperature 0.05): with argmax Q (epsilon 0.01) the dish's second half
    # fails when its ingredient differs from the first's (the Q-values tie there and the greedy action
    # takes the first ingredient's drawer); every trial reading f(id), 3 seeds x 1M
    # (benchmarks/dream_exploit_dqn.py): 0.19, 0.39, 0.18 against -0.02, -0.01, -0.02. In the whole of
    # DREAM (3 seeds x 2M, dream_held_out_score --tag cooking_temperature) the training ids reach 0.350
    # (optimum 0.399; argmax's -0.269) but the held-out test id falls to -0.473 (argmax's
    # -0.286): its z there is a mixture of the training ids' f the exploitation never met. So the
    # decoder-reading training trials exploit with the posterior that leaves the trial's own id out
    # (`leave_one_out_exploit`; the decoder and the explorer's reward keep the full one): on a training
    # id that is a mixture of the ids sharing two of its three drawers, as the test id's z is.
    # 3 seeds x 2M (dream_held_out_score --tag cooking_temperature_loo_exploit): held out 0.183
    # (-0.07, 0.20, 0.42) against -0.286 with argmax alone and -0.473 with the temperature alone;
    # training ids 0.331. Leaving the id out of the decoder and the reward as well: -0.227.
    # And f factored over the drawers (`id_factored`: f(id) = a sum of one part per drawer's ingredient):
    # the training ids' blends are then sums of parts the test id shares, and its z a blend of the
    # same kind. 3 seeds x 3M (dream_held_out_score --tag cooking_factored_3m): held out 0.464 [0.460,
    # 0.469], every seed 0.464 (optimum 0.467), training ids 0.400; without it 0.353 (0.46, 0.13, 0.46),
    # and dropping each training id from the exploitation's posterior w.p. 0.5 (`exploit_id_dropout`) 0.261.
    # dream_compare, 3 seeds x 2M: 0.464 [0.460, 0.469] held out, every seed.
    # On distraction this preset fits the training ids (0.74) and falls on held-out ones (0.29, with
    # noise 0.3 on f as well; PPO 0.48); with an always-on pull on f and a dearer exploration step as
    # well, 0.32 and 0.34 over 3 seeds (docs/dream.md). With the GRU decoder instead of the
    # posterior one: 0.05 on the test id for one seed, but 3 seeds x 2M -1.39 (one seed -3.10)
    "held-out-dqn": DreamConfig(decoder="posterior", decoder_replay=16384, id_init=0.0, info_penalty_relative=True,
                                exploit_learner="dqn", exploit_epsilon_steps=250_000, exploit_epsilon_end=0.01, dqn_batch=256,
                                dqn_steps=128, exploit_temperature=0.05, leave_one_out_exploit=True, id_factored=True),
    # distraction: the DQN exploitation learner (its ceiling reading f there 0.75-0.80, PPO's 0.60-0.66),
    # an always-on L2 pull on f (bottleneck 0, 0.003: f keeps only what the exploitation needs, no
    # per-id noise from the Q-loss) and the explorer's epsilon and ban on ending over the first 1.6M
    # steps instead of 1M (at 1M f and the decoder are barely formed, and explorers that may end
    # then stopped after 1-2 rides on 2 of 3 seeds): 3 seeds x 2M, held out (dream_compare) 0.559
    # [0.534, 0.583] against the "held-out" preset's 0.480 [0.463, 0.496]. And, as on cooking, the
    # decoder-reading training trials exploit with the posterior that leaves the trial's own id out
    # (`leave_one_out_exploit`): the exploitation meets the mixtures of training ids a held-out id's
    # rides decode to. 3 seeds x 2M (dream_held_out_score --tag distraction_loo_exploit): held out
    # 0.769 [0.765, 0.773] (0.748, 0.791, 0.768), training ids 0.772. DREAM's choice on distraction.
    "held-out-dqn-late": DreamConfig(decoder="posterior", decoder_replay=16384, id_init=0.0, info_penalty_relative=True,
                                     exploit_learner="dqn", exploit_epsilon_steps=250_000, exploit_epsilon_end=0.01, dqn_batch=256,
                                     bottleneck=0.0, bottleneck_coef=0.003, explore_full_steps=1_600_000,
                                     explore_epsilon_steps=1_600_000, leave_one_out_exploit=True),
    "paper": DreamConfig(),  # the paper's GRU decoder, trained on the update's own trials only
}


class DreamNetworks(nn.Module):
    """f (the id table), the exploration policy, the decoder g and the exploitation policy."""

    num_actions: int
    num_ids: int
    embed_dim: int
    explorer_hidden: int
    decoder_hidden: int
    exploit_hidden: tuple[int, ...]
    decoder_kind: str = "gru"
    train_ids: tuple[int, ...] = ()  #: the ids the "posterior" decoder's evidence ranges over
    id_init: float = 1.0  #: std of f's initial entries
    id_scale: float = 1.0  #: f = id_scale x the table
    #: (factored f) each id's components [num_ids][K] and the values each takes [K]; (): one table over the ids
    id_factors: tuple[tuple[int, ...], ...] = ()
    factor_sizes: tuple[int, ...] = ()

    def setup(self):
        # N(0, 1) entries as the reference (torch.nn.Embedding): ||f||^2 starts near embed_dim, the
        # bottleneck holds it near `bottleneck`, and the information gain of a bus ride dwarfs the step cost
        if self.factor_sizes:  # f = the sum of one table per component (each N(0, 1 / K): the sum's scale is the table's)
            std = self.id_init / float(len(self.factor_sizes)) ** 0.5
            self.f_parts = [nn.Embed(n, self.embed_dim, embedding_init=nn.initializers.normal(std)) for n in self.factor_sizes]
        else:
            self.f = nn.Embed(self.num_ids, self.embed_dim, embedding_init=nn.initializers.normal(self.id_init))
        self.explorer_in = nn.Dense(64)
        self.explorer_cell = nn.GRUCell(self.explorer_hidden, recurrent_kernel_init=orthogonal())
        self.explorer_pi = nn.Dense(self.num_actions, kernel_init=orthogonal(0.01))
        self.explorer_v = nn.Dense(1)
        if self.decoder_kind == "gru":
            self.decoder_in = nn.Dense(64)
            self.decoder_cell = nn.GRUCell(self.decoder_hidden, recurrent_kernel_init=orthogonal())
            self.decoder_mid = nn.Dense(128)
            self.decoder_out = nn.Dense(self.embed_dim)
        else:  # the evidence starts at 0: g starts at the prior's mean of f
            self.evidence = [nn.Dense(64), nn.Dense(128), nn.Dense(len(self.train_ids), kernel_init=nn.initializers.zeros)]
        self.exploit_layers = [nn.Dense(w) for w in self.exploit_hidden]
        self.exploit_pi = nn.Dense(self.num_actions, kernel_init=orthogonal(0.01))
        self.exploit_v = nn.Dense(1)

    def id_embedding(self, task_id):
        if self.factor_sizes:
            parts = jnp.asarray(self.id_factors, jnp.int32)[task_id]  # [..., K]
            return self.id_scale * sum(table(parts[..., k]) for k, table in enumerate(self.f_parts))
        return self.id_scale * self.f(task_id)

    def explore(self, h, x):
        h, y = self.explorer_cell(h, nn.relu(self.explorer_in(x)))
        return h, self.explorer_pi(y), self.explorer_v(y)[..., 0]

    @property
    def decoder_state_size(self) -> int:
        """The decoder's state: GRU units, or one logit per training id."""
        return self.decoder_hidden if self.decoder_kind == "gru" else len(self.train_ids)

    def decode_step(self, h, transition):
        if self.decoder_kind == "gru":
            h, _ = self.decoder_cell(h, nn.relu(self.decoder_in(transition)))
            return h
        x = transition
        for layer in self.evidence[:-1]:
            x = nn.relu(layer(x))
        return h + self.evidence[-1](x)  # h: the summed evidence (logits over the training ids)

    def decode(self, h, leave_out=None, drop=None):
        """g from the decoder's state h [..., state]; `leave_out` [...] (posterior decoder): the
        posterior over the training ids other than this id (the mean of f over them); `drop`
        [..., training ids] bool: further training ids it leaves out."""
        if self.decoder_kind == "gru":
            return self.decoder_out(nn.relu(self.decoder_mid(h)))
        ids = jnp.asarray(self.train_ids, jnp.int32)
        if leave_out is not None:
            h = jnp.where(ids == jnp.asarray(leave_out)[..., None], -1e9, h)
        if drop is not None:
            h = jnp.where(drop, -1e9, h)
        f = jax.lax.stop_gradient(self.id_embedding(ids))  # the decoder's loss must not move f
        return jax.nn.softmax(h, axis=-1) @ f

    def exploit(self, obs, z):
        x = jnp.concatenate([obs, z], axis=-1)
        for layer in self.exploit_layers:
            x = nn.relu(layer(x))
        return self.exploit_pi(x), self.exploit_v(x)[..., 0]

    def q_values(self, obs, z):
        """The "dqn" exploitation learner's Q-values (`dueling` of the exploitation heads)."""
        return dueling(*self.exploit(obs, z))

    def __call__(self, obs, transition, x):  # touches every part (init)
        he = jnp.zeros(x.shape[:-1] + (self.explorer_hidden,))
        hd = jnp.zeros(x.shape[:-1] + (self.decoder_state_size,))
        z = self.id_embedding(jnp.zeros(x.shape[:-1], jnp.int32))
        self.explore(he, x)
        z = z + self.decode(self.decode_step(hd, transition))
        return self.exploit(obs, z)


@dataclasses.dataclass(frozen=True)
class DreamAgent(Agent):
    """DREAM's policy as an agent: explores in episode 0 (recurrent), decodes the exploration
    episode into z, exploits with z. carry: explorer and decoder states, the last observation, and
    (training only) the id's z and whether to read it."""

    name = "dream"

    embed_dim: int = 32
    explorer_hidden: int = 64
    decoder_hidden: int = 128
    exploit_hidden: tuple[int, ...] = (128, 128)
    one_hot_obs: bool = True
    decoder: str = "gru"
    id_init: float = 1.0
    id_scale: float = 1.0
    id_factored: bool = False
    exploit_learner: str = "ppo"
    greedy: bool = True

    def encode(self, obs):
        """The observation as the networks read it (`dream_grid.one_hot_observation`, unless `one_hot_obs` is off)."""
        return one_hot_observation(self.env, obs) if self.one_hot_obs else obs

    @property
    def network(self) -> DreamNetworks:
        return DreamNetworks(self.env.num_actions, self.env.num_ids, self.embed_dim, self.explorer_hidden, self.decoder_hidden,
                             tuple(self.exploit_hidden), self.decoder, self.train_ids, self.id_init, self.id_scale, *self.factors)

    @property
    def factors(self) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
        """(each id's components, the values each takes) with `id_factored` (the family's `id_factors`), else ((), ())."""
        if not self.id_factored:
            return (), ()
        parts, sizes = self.env.id_factors()
        return tuple(tuple(int(v) for v in row) for row in parts), tuple(int(n) for n in sizes)

    @property
    def train_ids(self) -> tuple[int, ...]:
        """The family's training ids (whatever split it evaluates on), over which the "posterior" decoder reads."""
        return tuple(int(i) for i in self.env.train_ids()) if self.decoder == "posterior" else ()

    @property
    def decoder_size(self) -> int:
        return self.network.decoder_state_size

    def init(self, key):
        return {"h_explore": jnp.zeros((self.explorer_hidden,)), "h_decoder": jnp.zeros((self.decoder_size,)),
                "last_obs": jnp.zeros(self.env.obs_shape), "z_id": jnp.zeros((self.embed_dim,)), "use_id": jnp.bool_(False),
                "epsilon": jnp.float32(0.0), "exploit_epsilon": jnp.float32(0.0), "exploit_temperature": jnp.float32(0.0), "may_end": jnp.bool_(True),
                "leave_out": jnp.int32(-1), "drop": jnp.zeros((len(self.train_ids),), bool)}

    def read(self, params, h, last_obs, prev_action, outcome_obs, push, leave_out=-1, drop=None):
        """The decoder reads the transition (last_obs, prev_action, outcome_obs) into its state `h`
        where `push`: (state, g). The rollout's step and the reservoir's replay both read this way.
        `leave_out`: a training id the posterior decoder's g leaves out (training only; -1: none);
        `drop` [training ids] bool: others it leaves out (training only)."""
        transition = jnp.concatenate([self.encode(last_obs), jax.nn.one_hot(prev_action, self.env.num_actions), self.encode(outcome_obs)])
        h = jnp.where(push, self.network.apply(params, h, transition, method=DreamNetworks.decode_step), h)
        return h, self.network.apply(params, h, leave_out, drop, method=DreamNetworks.decode)

    def step(self, params, carry, timestep: TimeStep):
        """One step of one trial: (carry, logits, value, the decoder's z, exploring)."""
        net = self.network
        fresh = self.init(None)
        carry = {**carry, **{k: jnp.where(timestep.first, fresh[k], carry[k]) for k in ("h_explore", "h_decoder", "last_obs")}}
        exploring = timestep.episode_index == 0
        h_decoder, g = self.read(params, carry["h_decoder"], carry["last_obs"], timestep.prev_action, timestep.outcome_obs,
                                 reads_exploration(timestep), carry["leave_out"], carry["drop"])
        prev = jax.nn.one_hot(timestep.prev_action, self.env.num_actions) * (~timestep.first)
        obs = self.encode(timestep.obs)
        x = jnp.concatenate([obs, prev, timestep.prev_reward[None]])
        h_explore, logits_e, value_e = net.apply(params, carry["h_explore"], x, method=DreamNetworks.explore)
        logits_e = mix_uniform(logits_e, carry["epsilon"])  # the explorer's behaviour (training)
        logits_e = jnp.where(~carry["may_end"] & (jnp.arange(self.env.num_actions) == END_EPISODE), -1e9, logits_e)
        z = jnp.where(carry["use_id"], carry["z_id"], jax.lax.stop_gradient(g))
        logits_x, value_x = net.apply(params, obs, z, method=DreamNetworks.exploit)
        if self.exploit_learner == "dqn":  # acts greedily on Q (as logits: 0 for the argmax, -30 elsewhere), or by softmax(Q / temperature)
            q = dueling(logits_x, value_x)
            tau = carry["exploit_temperature"]
            greedy_x = jnp.where(jnp.arange(self.env.num_actions) == jnp.argmax(q), 0.0, -30.0)
            logits_x = jnp.where(tau > 0, q / jnp.maximum(tau, 1e-6), greedy_x)
        eps_x = carry["exploit_epsilon"]  # the same mixture for the exploitation policy (training; 0 by default)
        logits_x = jnp.where(eps_x > 0, mix_uniform(logits_x, eps_x), logits_x)
        logits = jnp.where(exploring, logits_e, logits_x)
        value = jnp.where(exploring, value_e, value_x)
        carry = {**carry, "h_explore": jnp.where(exploring, h_explore, carry["h_explore"]), "h_decoder": h_decoder, "last_obs": timestep.obs}
        return carry, logits, value, g, exploring

    def act(self, params, carry, timestep, key):
        carry, logits, _, _, _ = self.step(params, carry, timestep)
        action = jnp.argmax(logits) if self.greedy else jax.random.categorical(key, logits)
        return action.astype(jnp.int32), carry


@struct.dataclass
class DreamTrainState(TrainState):
    """The common fields and (with `decoder_replay`) the reservoir of exploration episodes."""

    #: {"last_obs", "outcome_obs": [N, S, *obs], "prev_action": [N, S], "reads": [N, S] bool,
    #: "task_id": [N]}: the first S = max_steps + 1 steps of N trials, what the decoder reads
    decoder_buffer: Any = None
    decoder_seen: jax.Array = None  #: int32, exploration episodes offered to the reservoir so far
    #: ("dqn" exploitation learner) {"obs", "next_obs": [N, *obs], "action", "reward", "done",
    #: "task_id", "use_id", "z": [N, embed_dim] the decoder's z the trial exploited with}: a ring of
    #: exploitation transitions
    exploit_buffer: Any = None
    exploit_count: jax.Array = None  #: int32, exploitation transitions written to the ring so far
    dqn_opt_state: Any = None  #: the Adam state of the Q-learning-only steps (`dqn_steps`)


@register
@dataclasses.dataclass(frozen=True)
class Dream(InContextAlgorithm):
    """DREAM. `make("dream", env, 1 + exploitation episodes, ...)` on a two-phase family."""

    name = "dream"
    Config = DreamConfig
    State = DreamTrainState
    presets: ClassVar[dict[str, DreamConfig]] = PRESETS
    update_keys = 2  #: the rollout; the trials' id noise and choice

    config: DreamConfig = DreamConfig()

    @classmethod
    def default_preset(cls, env, episodes=None):
        train, test = (getattr(env, name, None) for name in ("train_ids", "test_ids"))
        if getattr(env, "name", None) == "cooking":
            return "held-out-dqn", ("DREAM with the posterior decoder, its reservoir of 16,384 exploration episodes, f started at "
                                    "zero, and a DQN exploitation learner (PPO's never learns cooking's chain) with Boltzmann "
                                    "exploration, trained on the posterior with the trial's own id left out; f a sum of one part per drawer")
        if train is not None and test is not None and set(train().tolist()) != set(test().tolist()):
            return "held-out-dqn-late", ("DREAM with the posterior decoder, its reservoir of 16,384 exploration episodes, f started "
                                         "at zero under an always-on L2 pull, a DQN exploitation learner and the explorer's epsilon "
                                         "over 1.6M steps, the exploitation trained on the posterior with the trial's own id "
                                         "left out, for a family scored on held-out ids")
        return "posterior", "DREAM with PPO learners, the posterior decoder and its reservoir of 16,384 exploration episodes"

    def __post_init__(self):
        if not getattr(self.env, "two_phase", False):
            raise ConfigError(f"dream: needs a two-phase family (city, distraction, map, cooking); {self.env.name} has no exploration phase")
        if self.episodes < 2:
            raise ConfigError(f"dream: a trial needs an exploration episode and at least one exploitation episode (episodes >= 2), got {self.episodes}")
        c = self.config
        if c.id_factored and not hasattr(self.env, "id_factors"):
            raise ConfigError(f"dream: id_factored needs a family that says what its ids are made of (id_factors); {self.env.name} does not",
                              "id_factored")
        per_update = c.trials_per_update * (self.episodes - 1) * self.env.max_steps
        if c.exploit_learner == "dqn" and c.dqn_buffer < per_update:
            raise ConfigError(f"dream: dqn_buffer ({c.dqn_buffer}) must hold an update's exploitation transitions "
                              f"(trials_per_update x exploitation steps: {per_update})", "dqn_buffer")
        super().__post_init__()

    def for_run(self, total_updates, saved_config=None):
        # 0 (constant) is a schedule a run may have saved, and the one a folder written before the field existed ran with
        return self.with_run_length("lr_decay_updates", total_updates, saved_config, low=0, before=0)

    @property
    def steps_per_update(self) -> int:
        return self.config.trials_per_update * self.trial_steps

    def agent(self, greedy: bool = True) -> DreamAgent:
        return agent_from_config(DreamAgent, self.env, self.episodes, self.config, greedy=greedy)

    def optimizer(self, steps_per_update: int | None = None):
        """Adam, its learning rate decayed linearly to 0 over `lr_decay_updates` updates of
        `steps_per_update` gradient steps (the shared ones', epochs x minibatches, by default)."""
        c = self.config
        if c.lr_decay_updates is None:
            raise ConfigError("dream: lr_decay_updates=None means the run's own length, which metarl.run.train sets; "
                              "give a number of updates (0: a constant learning rate) to use the algorithm outside it", "lr_decay_updates")
        steps = c.epochs * c.minibatches if steps_per_update is None else steps_per_update
        lr = optax.linear_schedule(c.lr, 0.0, c.lr_decay_updates * steps) if c.lr_decay_updates else c.lr
        return adamw(lr, eps=1e-5, weight_decay=0.0, clip_norm=c.max_grad_norm)

    def init_params(self, key_params):
        agent = self.agent()
        obs = agent.encode(jnp.zeros(self.env.obs_shape))
        transition = jnp.zeros((2 * obs.shape[0] + self.env.num_actions,))
        x = jnp.zeros((obs.shape[0] + self.env.num_actions + 1,))
        return agent.network.init(key_params, obs, transition, x)

    def init_extra(self, params, key_params):
        c, obs, dtype = self.config, self.env.obs_shape, self.reservoir_obs_dtype
        extra = {}
        if c.decoder_replay:
            N, S = c.decoder_replay, self.env.max_steps + 1
            extra["decoder_buffer"] = {"last_obs": jnp.zeros((N, S) + obs, dtype), "outcome_obs": jnp.zeros((N, S) + obs, dtype),
                                       "prev_action": jnp.zeros((N, S), jnp.int8), "reads": jnp.zeros((N, S), bool),
                                       "task_id": jnp.zeros((N,), jnp.int32)}
            extra["decoder_seen"] = jnp.int32(0)
        if c.exploit_learner == "dqn":
            N = c.dqn_buffer
            extra["exploit_buffer"] = {"obs": jnp.zeros((N,) + obs, dtype), "next_obs": jnp.zeros((N,) + obs, dtype),
                                       "action": jnp.zeros((N,), jnp.int8), "reward": jnp.zeros((N,), jnp.float32),
                                       "done": jnp.zeros((N,), bool), "task_id": jnp.zeros((N,), jnp.int32),
                                       "use_id": jnp.zeros((N,), bool), "z": jnp.zeros((N, c.embed_dim), jnp.float32)}
            extra["exploit_count"] = jnp.int32(0)
            if c.dqn_steps:
                extra["dqn_opt_state"] = self.optimizer(c.dqn_steps).init(params)
        return extra

    def ring_sample(self, ring, count, key, shape):
        """Rows drawn uniformly from the filled part of the ring (after `count` writes), [*shape, ...]."""
        filled = jnp.maximum(jnp.minimum(count, self.config.dqn_buffer), 1)
        return jax.tree.map(lambda x: x[jax.random.randint(key, shape, 0, filled)], ring)

    def q_steps(self, params, opt_state, ring, count, key):
        """`dqn_steps` gradient steps of the Q-learning loss alone on batches drawn from the ring, the
        target re-set every `dqn_target_every`: (params, opt_state, the last loss)."""
        c = self.config
        opt = self.optimizer(c.dqn_steps)  # their own Adam state, the same learning rate and decay
        n = c.dqn_only_batch or c.trials_per_update // c.minibatches * c.dqn_batch  # (0: as many as a shared step replays)

        def step(carry, k):
            p, state, target = carry
            k_pick, k_noise = jax.random.split(k)
            rows = self.ring_sample(ring, count, k_pick, (n,))
            (loss, _), grads = jax.value_and_grad(self.q_loss, has_aux=True)(p, target, rows, jax.random.normal(k_noise, (n, c.embed_dim)))
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state, target), loss

        def round_(carry, k):
            p, state = carry
            (p, state, _), losses = jax.lax.scan(step, (p, state, p), jax.random.split(k, c.dqn_target_every))
            return (p, state), losses[-1]

        (params, opt_state), losses = jax.lax.scan(round_, (params, opt_state), jax.random.split(key, c.dqn_steps // c.dqn_target_every))
        return params, opt_state, losses[-1]

    # --- one trial's recomputation (the rollout's steps, teacher-forced) ------------------------
    def decayed(self, update_step, steps: int, end: float):
        """1 decaying linearly to `end` over `steps` env steps, at this update (`end` throughout if `steps` is 0)."""
        if steps == 0:
            return jnp.float32(end)
        frac = jnp.minimum(update_step.astype(jnp.float32) * self.steps_per_update / steps, 1.0)
        return 1.0 - frac * (1.0 - end)

    def epsilon(self, update_step):
        """The explorer's epsilon at this update (`explore_epsilon_steps`, `explore_epsilon_end`)."""
        return self.decayed(update_step, self.config.explore_epsilon_steps, self.config.explore_epsilon_end)

    def step_penalty(self, f):
        """The information gain's per-step cost for the update's id embeddings `f` [B, d]:
        `info_penalty`, times mean ||f||^2 / 10 with `info_penalty_relative`."""
        c = self.config
        return c.info_penalty * (jnp.mean(jnp.sum(jnp.square(f), -1)) / 10.0 if c.info_penalty_relative else 1.0)

    def noisy_id_embedding(self, params, task_id, noise):
        """f(task id) + `noise` x the given standard normal draws: the z of the trials that read the id."""
        return self.agent().network.apply(params, task_id, method=DreamNetworks.id_embedding) + self.config.noise * noise

    def may_end(self, update_step):
        """Whether the explorer may end its episode at this update (`explore_full_steps`)."""
        return update_step * self.steps_per_update >= self.config.explore_full_steps

    def exploit_epsilon(self, update_step):
        """The exploitation policy's epsilon at this update (`exploit_epsilon_steps`, `exploit_epsilon_end`)."""
        return self.decayed(update_step, self.config.exploit_epsilon_steps, self.config.exploit_epsilon_end)

    # --- the "dqn" exploitation learner's replay ----------------------------------------------
    def exploit_transitions(self, batch, exploit_mask, g, task_id, use_id):
        """The exploitation transitions of B recorded trials [B, T, ...] as [B * K] rows (K: the
        exploitation steps a trial can hold) and whether each is one: (obs, action, reward, the
        observation it led to, done, the trial's id, whether it read the id, the decoder's z)."""
        B, T = exploit_mask.shape
        K = min((self.episodes - 1) * self.env.max_steps, T)
        order = jnp.argsort(~exploit_mask, axis=1, stable=True)[:, :K]  # each trial's exploitation steps first, in order

        def take(x):
            return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1).reshape((B * K,) + x.shape[2:])

        ts_b = batch["timestep"]
        next_obs = jnp.concatenate([ts_b.outcome_obs[:, 1:], jnp.zeros_like(ts_b.obs[:, :1])], axis=1)  # where step t's action led
        reward, next_obs, done = self.n_step(batch["reward"], next_obs, batch["done"])
        rows = {"obs": take(ts_b.obs), "next_obs": take(next_obs), "action": take(batch["action"]),
                "reward": take(reward), "done": take(done), "task_id": jnp.repeat(task_id, K), "use_id": jnp.repeat(use_id, K), "z": take(g)}
        return rows, take(exploit_mask)

    def n_step(self, reward, next_obs, done):
        """`dqn_nstep`-step transitions of trials [B, T, ...] in step order: at each step t the
        rewards of steps t .. t+n-1 discounted by gamma (none after the episode's done), the
        observation the last of them led to, and whether the episode ended among them (then no
        bootstrap; else the target bootstraps with gamma^n). n = 1: the recorded transitions."""
        gamma = self.config.gamma

        def ahead(x, k, fill):  # x[:, t + k], `fill` past the trial's end
            return jnp.concatenate([x[:, k:], jnp.full_like(x[:, :k], fill)], axis=1) if k else x

        total, last, ended = jnp.zeros_like(reward), next_obs, jnp.zeros_like(done)
        for k in range(self.config.dqn_nstep):
            live = ~ended
            total = total + jnp.where(live, gamma**k * ahead(reward, k, 0), 0.0)
            last = jnp.where(live.reshape(live.shape + (1,) * (next_obs.ndim - 2)), ahead(next_obs, k, 0), last)
            ended = ended | (live & ahead(done, k, True))
        return total, last, ended

    def ring_add(self, buffer, count, rows, keep):
        """The rows where `keep` written to the ring `buffer` after `count` earlier ones (in order, the
        oldest overwritten): (buffer, count + kept)."""
        N = jax.tree.leaves(buffer)[0].shape[0]
        rank = jnp.cumsum(keep) - 1
        slot = jnp.where(keep, (count + rank) % N, N)  # N: not written (dropped by the scatter)
        buffer = jax.tree.map(lambda b, x: b.at[slot].set(x.astype(b.dtype), mode="drop"), buffer, rows)
        return buffer, count + jnp.sum(keep).astype(jnp.int32)

    def q_loss(self, params, target, rows, noise):
        """Double Q-learning's Huber loss on replayed exploitation transitions (leading dims any):
        z = f(id) + `noise` x the given draws for trials that read the id, their stored decoder z
        otherwise; the target r + gamma^n (1 - done) Q_target(s', argmax_a Q(s', a)) (n `dqn_nstep`:
        r, s' and done are `n_step`'s), `target` the parameters the update started from. Returns
        (loss, mean Q(s, a))."""
        c, agent = self.config, self.agent()
        net = agent.network
        obs, next_obs = agent.encode(rows["obs"].astype(jnp.float32)), agent.encode(rows["next_obs"].astype(jnp.float32))
        use_id = rows["use_id"][..., None]
        z = jnp.where(use_id, self.noisy_id_embedding(params, rows["task_id"], noise), rows["z"])
        z_target = jnp.where(use_id, self.noisy_id_embedding(target, rows["task_id"], noise), rows["z"])
        q = net.apply(params, obs, z, method=DreamNetworks.q_values)
        q_sa = jnp.take_along_axis(q, rows["action"].astype(jnp.int32)[..., None], axis=-1)[..., 0]
        best = jnp.argmax(jax.lax.stop_gradient(net.apply(params, next_obs, z, method=DreamNetworks.q_values)), axis=-1)
        q_next = jnp.take_along_axis(net.apply(target, next_obs, z_target, method=DreamNetworks.q_values), best[..., None], axis=-1)[..., 0]
        y = jax.lax.stop_gradient(rows["reward"] + c.gamma**c.dqn_nstep * (1.0 - rows["done"].astype(jnp.float32)) * q_next)
        return jnp.mean(optax.huber_loss(q_sa, y)), jnp.mean(q_sa)

    def replay(self, params, batch, task_id, noise, use_id, epsilon, may_end=True, exploit_epsilon=0.0, leave_out=-1, drop=None):
        """Logits, values, decoder embeddings and decoder states of the recorded steps of one trial
        [T, ...] under `params`: the rollout's computation with the recorded actions."""
        agent = self.agent()
        carry = {**agent.init(None), "z_id": self.noisy_id_embedding(params, task_id, noise), "use_id": use_id, "epsilon": epsilon,
                 "may_end": jnp.asarray(may_end), "exploit_epsilon": jnp.asarray(exploit_epsilon, jnp.float32),
                 "leave_out": jnp.asarray(leave_out, jnp.int32)}
        if drop is not None:
            carry["drop"] = drop

        def body(carry, timestep):
            carry, logits, value, g, exploring = agent.step(params, carry, timestep)
            return carry, (logits, value, g, carry["h_decoder"])

        _, (logits, value, g, h) = jax.lax.scan(body, carry, batch["timestep"])
        return logits, value, g, h

    # --- the decoder's reservoir (`decoder_replay`) ----------------------------------------------
    @property
    def reservoir_obs_dtype(self):
        """int8 for the grid families' small integer observations (16,384 city trials, 21 steps of two
        7-entry observations: 4.8 MB), float32 otherwise."""
        levels = getattr(self.env, "obs_levels", None)
        return jnp.int8 if levels is not None and max(levels) <= 127 else jnp.float32

    def decoder_slots(self, batch, valid):
        """The decoder's view of B recorded trials [B, T, ...]: their first max_steps + 1 steps (the
        whole exploration episode and the first exploitation step), as the reservoir stores them."""
        S = self.env.max_steps + 1
        ts_b = batch["timestep"]
        last_obs = jnp.concatenate([jnp.zeros_like(ts_b.obs[:, :1]), ts_b.obs[:, :-1]], axis=1)  # the agent's carry["last_obs"]
        reads = valid & reads_exploration(ts_b)
        return {"last_obs": last_obs[:, :S], "outcome_obs": ts_b.outcome_obs[:, :S], "prev_action": ts_b.prev_action[:, :S],
                "reads": reads[:, :S]}

    def decode_slot(self, params, slot, leave_out=None):
        """The decoder's embeddings [S, embed_dim] over one stored trial's steps (g(tau_:t) after each
        read); `leave_out`: an id the posterior decoder leaves out (`DreamNetworks.decode`)."""
        agent = self.agent()

        def body(h, x):
            last_obs, prev_action, outcome_obs, reads = x
            h, g = agent.read(params, h, last_obs.astype(jnp.float32), prev_action, outcome_obs.astype(jnp.float32), reads)
            return h, (h, g)

        h0 = jnp.zeros((agent.decoder_size,))
        _, (h, g) = jax.lax.scan(body, h0, (slot["last_obs"], slot["prev_action"], slot["outcome_obs"], slot["reads"]))
        return g if leave_out is None else self.leave_out(params, h, leave_out)

    def explore_reward(self, params, g, h, task_id, f):
        """The explorer's information-gain reward [B, T] of B trials from the decoder's embeddings g
        and states h [B, T, ...] and the trials' f [B, d], read from the posterior over the other
        training ids with `leave_one_out_reward` (else the full one)."""
        c = self.config
        if c.leave_one_out_reward or self.exploit_reads_other:  # (g then is the left-out one the exploitation read)
            g = self.leave_out(params, h, task_id if c.leave_one_out_reward else -1)
        return jax.vmap(information_gain, in_axes=(0, 0, None))(g, f, self.step_penalty(f))

    @property
    def exploit_reads_other(self) -> bool:
        """Whether the training exploitation reads another posterior than the decoder's own
        (`leave_one_out_exploit`, `exploit_id_dropout`): the rollout's g is then not the one the
        decoder's loss and the explorer's reward read."""
        return self.config.leave_one_out_exploit or self.config.exploit_id_dropout > 0

    def leave_out(self, params, h, task_id):
        """g from the posterior decoder's states h [..., T, state] over the training ids other than
        `task_id` [...]."""
        task_id = jnp.asarray(task_id)
        task_id = jnp.broadcast_to(task_id.reshape(task_id.shape + (1,) * (h.ndim - 1 - task_id.ndim)), h.shape[:-1])
        return self.agent().network.apply(params, h, task_id, method=DreamNetworks.decode)

    def reservoir_add(self, buffer, seen, new, key):
        """`new` ({field: [B, ...]}) offered to the reservoir `buffer` after `seen` earlier trials
        (Vitter's algorithm R: trial n is kept w.p. N / (n + 1), in a uniformly drawn slot, so the
        buffer is a uniform sample of every trial offered): (buffer, seen + B)."""
        N = jax.tree.leaves(buffer)[0].shape[0]
        B = jax.tree.leaves(new)[0].shape[0]
        n = seen + jnp.arange(B, dtype=jnp.int32)
        drawn = jnp.floor(jax.random.uniform(key, (B,)) * (n + 1).astype(jnp.float32)).astype(jnp.int32)
        slot = jnp.where(n < N, n, drawn)  # slot >= N: not kept (dropped by the scatter)
        buffer = jax.tree.map(lambda b, x: b.at[slot].set(x.astype(b.dtype), mode="drop"), buffer, new)
        return buffer, seen + B

    def _update(self, ts: TrainState, key_rollout, key_ids):
        c, agent, trial = self.config, self.agent(greedy=False), self.trial
        B, T = c.trials_per_update, self.trial_steps
        key_tasks, key_reset, key_steps = jax.random.split(key_rollout, 3)
        tasks = self.env.sample_tasks(key_tasks, B)
        if c.decoder_replay:  # (split only then: runs without the reservoir keep their draws)
            key_ids, key_reservoir, key_sample = jax.random.split(key_ids, 3)
        if c.exploit_learner == "dqn":
            key_ids, key_dqn, key_dqn_noise, key_q = jax.random.split(key_ids, 4)
        key_noise, key_use, key_shuffle = jax.random.split(key_ids, 3)
        noise = jax.random.normal(key_noise, (B, c.embed_dim))
        use_id = jax.random.uniform(key_use, (B,)) < c.id_fraction
        params = ts.params
        net = agent.network
        z_id = self.noisy_id_embedding(params, tasks.task_id, noise)
        timestep, state = jax.vmap(trial.reset)(jax.random.split(key_reset, B), tasks)
        carry = jax.vmap(agent.init)(jax.random.split(key_reset, B))
        epsilon = self.epsilon(ts.update_step)
        may_end = self.may_end(ts.update_step)
        exploit_epsilon = self.exploit_epsilon(ts.update_step)
        leave = tasks.task_id if c.leave_one_out_exploit else jnp.full((B,), -1, jnp.int32)  # (-1: none)
        drop = jnp.zeros((B, len(agent.train_ids)), bool)
        if c.exploit_id_dropout:  # (a key of its own only then: runs without it keep their draws)
            key_ids, key_drop = jax.random.split(key_ids)
            drop = jax.random.uniform(key_drop, drop.shape) < c.exploit_id_dropout
        carry = {**carry, "leave_out": leave, "drop": drop, "z_id": z_id, "use_id": use_id, "epsilon": jnp.full((B,), epsilon), "may_end": jnp.full((B,), may_end),
                 "exploit_epsilon": jnp.full((B,), exploit_epsilon), "exploit_temperature": jnp.full((B,), c.exploit_temperature)}
        step_one = jax.vmap(lambda cr, t: agent.step(params, cr, t))

        def policy(carry, timestep, key, t):
            carry, logits, value, _, _ = step_one(carry, timestep)
            action, logp = sampled_actions(logits, key)
            return action, carry, {"logp": logp, "value": value}

        def record(s):
            return {"timestep": s.timestep, "action": s.action, "logp": s.out["logp"], "value": s.out["value"], "reward": s.reward,
                    "valid": s.info["valid"], "done": s.info["terminated"] | s.info["truncated"]}

        _, batch = rollout(trial, policy, carry, timestep, state, jax.random.split(key_steps, T), batch=True, record=record)
        batch = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch)  # [B, T, ...]
        exploring = batch["timestep"].episode_index == 0
        valid = batch["valid"]

        # the information-gain reward, from the decoder as it is now: d_t before step t's transition, d_{t+1} after
        replay = jax.vmap(lambda p, b, i, n, u, lo, dr: self.replay(p, b, i, n, u, epsilon, may_end, exploit_epsilon, lo, dr),
                          in_axes=(None, 0, 0, 0, 0, 0, 0))
        _, _, g, h_decoder = replay(params, batch, tasks.task_id, noise, use_id, leave, drop)
        f = jax.lax.stop_gradient(net.apply(params, tasks.task_id, method=DreamNetworks.id_embedding))
        info_reward = self.explore_reward(params, g, h_decoder, tasks.task_id, f)
        reward = jnp.where(valid, jnp.where(exploring, info_reward, batch["reward"]), 0.0)
        discount = c.gamma * (1.0 - (batch["done"] | ~valid).astype(jnp.float32))
        v_next = jnp.concatenate([batch["value"][:, 1:], jnp.zeros((B, 1))], axis=1)
        advantage = jax.vmap(generalized_advantage_estimation, in_axes=(0, 0, 0, 0, None))(reward, discount, batch["value"], v_next, c.gae_lambda)
        target = advantage + batch["value"]

        explore_mask, exploit_mask = valid & exploring, valid & ~exploring
        adv = jnp.where(exploring, standardise(advantage, explore_mask), standardise(advantage, exploit_mask))
        # the decoder learns where it has read a new exploration transition (at the first exploitation step: the whole episode)
        decoder_mask = valid & reads_exploration(batch["timestep"])

        data = {"batch": batch, "task_id": tasks.task_id, "leave": leave, "drop": drop, "noise": noise, "use_id": use_id, "adv": adv, "target": target,
                "explore": explore_mask.astype(jnp.float32), "exploit": exploit_mask.astype(jnp.float32),
                "decoder": decoder_mask.astype(jnp.float32)}
        extra = {}
        if c.decoder_replay:
            slots = {**self.decoder_slots(batch, valid), "task_id": tasks.task_id}
            buffer, seen = self.reservoir_add(ts.decoder_buffer, ts.decoder_seen, slots, key_reservoir)
            pick = jax.random.randint(key_sample, (B,), 0, jnp.minimum(seen, c.decoder_replay))
            data["replayed"] = jax.tree.map(lambda x: x[pick], buffer)
            extra = {"decoder_buffer": buffer, "decoder_seen": seen}
        dqn = c.exploit_learner == "dqn"
        if dqn:  # this update's exploitation transitions join the ring; each trial row draws dqn_batch of it
            rows, keep = self.exploit_transitions(batch, exploit_mask, g, tasks.task_id, use_id)
            ring, count = self.ring_add(ts.exploit_buffer, ts.exploit_count, rows, keep)
            data["dqn"] = self.ring_sample(ring, count, key_dqn, (B, c.dqn_batch))
            data["dqn_noise"] = jax.random.normal(key_dqn_noise, (B, c.dqn_batch, c.embed_dim))
            data["exploit"] = jnp.zeros_like(data["exploit"])  # no PPO loss on the exploitation steps
            extra = {**extra, "exploit_buffer": ring, "exploit_count": count}
        target_params = params

        def loss_fn(p, d):
            logits, value, g, h = replay(p, d["batch"], d["task_id"], d["noise"], d["use_id"], d["leave"], d["drop"])
            if c.leave_one_out_decoder or self.exploit_reads_other:  # the decoder's loss on the full posterior unless left out
                g = self.leave_out(p, h, d["task_id"] if c.leave_one_out_decoder else -1)
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits), d["batch"]["action"][..., None], axis=-1)[..., 0]
            losses = {}
            for phase in ("explore", "exploit"):
                m = d[phase]
                pg, _ = ppo_clipped_policy_loss(logp, d["batch"]["logp"], d["adv"], c.clip_eps, m)
                losses[phase] = pg + c.vf_coef * clipped_value_loss(value, d["target"], mask_t=m) - c.ent_coef * entropy_from_logits(logits, m)
            f_now = net.apply(p, d["task_id"], method=DreamNetworks.id_embedding)
            decoder = masked_mean(jnp.sum(jnp.square(g - jax.lax.stop_gradient(f_now)[:, None]), -1), d["decoder"])
            if c.decoder_replay:  # the same loss on the reservoir's exploration episodes
                r = d["replayed"]
                if c.leave_one_out_decoder:
                    g_r = jax.vmap(self.decode_slot, in_axes=(None, 0, 0))(p, r, r["task_id"])
                else:
                    g_r = jax.vmap(self.decode_slot, in_axes=(None, 0))(p, r)
                f_r = jax.lax.stop_gradient(net.apply(p, r["task_id"], method=DreamNetworks.id_embedding))
                decoder = decoder + masked_mean(jnp.sum(jnp.square(g_r - f_r[:, None]), -1), r["reads"].astype(jnp.float32))
            bottleneck = jnp.mean(jnp.maximum(jnp.sum(jnp.square(f_now), -1), c.bottleneck))
            total = losses["explore"] + losses["exploit"] + c.decoder_coef * decoder + c.bottleneck_coef * bottleneck
            out = {"explore_loss": losses["explore"], "exploit_loss": losses["exploit"], "decoder_loss": decoder,
                   "id_norm": jnp.mean(jnp.sum(jnp.square(f_now), -1))}
            if dqn:
                q_loss, q_mean = self.q_loss(p, target_params, d["dqn"], d["dqn_noise"])
                total = total + c.dqn_coef * q_loss
                out = {**out, "exploit_loss": q_loss, "q_mean": q_mean}
            return total, out

        params, opt_state, stats = minibatch_epochs(loss_fn, self.optimizer(), params, ts.opt_state, data, c.minibatches, c.epochs, key_shuffle)
        if dqn and c.dqn_steps:
            params, dqn_opt_state, q_only = self.q_steps(params, ts.dqn_opt_state, ring, count, key_q)
            extra["dqn_opt_state"] = dqn_opt_state
            stats = {**stats, "q_only_loss": q_only}
        env_reward = jnp.where(exploit_mask, batch["reward"], 0.0).sum(1)  # [B] exploitation return per trial
        decoded = (~use_id).astype(jnp.float32)
        ts_b = batch["timestep"]
        read_all = (valid & (ts_b.episode_index == 1) & ts_b.done).astype(jnp.float32)  # g after the whole exploration episode
        g_full = self.leave_out(params, h_decoder, -1) if self.exploit_reads_other else g  # the decoder's own (full) posterior
        final_error = jnp.sum(jnp.square(g_full - f[:, None]), -1)
        metrics = {**stats,
                   "exploit_return": jnp.mean(env_reward),
                   "exploit_return_decoded": jnp.sum(env_reward * decoded) / jnp.maximum(decoded.sum(), 1.0),
                   "decoder_final": masked_mean(final_error, read_all),
                   "explore_steps": jnp.mean(jnp.sum(explore_mask, 1).astype(jnp.float32)),
                   "info_reward": masked_mean(info_reward, explore_mask.astype(jnp.float32)), "explore_epsilon": epsilon}
        if c.leave_one_out_reward or c.leave_one_out_decoder or self.exploit_reads_other:  # the error after exploring as on an id never seen
            g_out = self.leave_out(params, h_decoder, tasks.task_id)
            metrics["decoder_final_left_out"] = masked_mean(jnp.sum(jnp.square(g_out - f[:, None]), -1), read_all)
        return ts.replace(params=params, opt_state=opt_state, **extra), metrics
