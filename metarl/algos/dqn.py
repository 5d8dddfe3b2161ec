"""DQN and Double DQN (Mnih et al. 2015; van Hasselt et al. 2016) with contexts: a per-context
policy for contextual RL (`metarl.envs.contextual`).

One `update` = `train_every` environment steps of each of `num_envs` streams under an epsilon-greedy
policy (epsilon decays linearly from `eps_start` to `eps_end` over `exploration_fraction` of the run),
the transitions written into a replay buffer that lives in the train state (a ring of `buffer_size`
slots, inside the jitted update), then, once `learning_starts` steps are done, `gradient_steps` (1) gradient steps, each on
`batch_size` transitions drawn uniformly from the filled slots, and the target network moved
towards the online one (`tau`; 1: copied) whenever the step count passes a multiple of
`target_every`. Targets: r + gamma (1 - terminated) max_a Q_target(s', a) (DQN), or Q_target(s',
argmax_a Q(s', a)) (`double=True`); a time-limit truncation bootstraps from the state the episode
was cut in. Defaults: CleanRL's DQN on CartPole-v1 (MLP 120-84, Adam lr 2.5e-4, buffer 10,000,
batch 128, target copied every 500 steps, eps 1 -> 0.05 over half of training, learning from step
10,000, a gradient step every 10 steps).

Context modes (`context_mode`), what the Q-network reads besides the observation:

- `hidden`: nothing (the context must be acted on blind);
- `explicit`: the task's context vector (each factor's multiplier of its default), in training and
  at test (the agent `reads_context`, and is not privileged otherwise);
- `learned` (JRPL): an encoder MLP (`encoder_hidden`, [16, 16]) -> `encoder_dim` (2) of each of the
  last `history` (20) transitions (s, a, s') seen in the current context (the current trial:
  training streams run one episode per context, evaluation may run several), mean-pooled (or mean
  and std, `pooling="mean_std"`) over the transitions seen so far, trained jointly with the
  Q-network through the Q loss only. Each replay slot keeps the window the agent acted with.
- `predictor` (IIDA, "context is everything"; Evans et al. 2022): the same encoder and window, but
  trained only through a next-state predictor P(s, a, z) -> s' - s (an MLP, `predictor_hidden`,
  [16, 16]) on the replay buffer's transitions, z pooled from the window of transitions before each
  one (never the transition predicted); the Q-network reads z with its gradient stopped. The
  generator of the transitions is the behaviour policy (epsilon-greedy, random for the first
  `learning_starts` steps), as in the reference's loop. The reference detaches z before its
  predictor as well, so its encoder gets no gradient at all; here the prediction loss trains it.
- `probing` (EPI; Zhou et al. 2019): the first `probe_steps` (10) steps of every trial are taken by
  a probing policy (its own Q-network over the observation and the probe step), whose transitions
  fill the window, which then stays fixed for the rest of the trial: the agent's context is the
  predictor mode's encoding of the probe. The probing policy is rewarded, per probe step, by how
  much the probe so far improves the prediction of the next state: the error of a context-free
  next-state model f0(s, a) minus that of the encoder's predictor f(s, a, z) (computed when the
  probe transitions are replayed, from their own replay ring of `probe_buffer_size` slots, with
  the current models, gradients stopped); it learns by Q-learning (discount `probe_gamma`) on that
  reward, f0 by its prediction loss. EPI probes in a separate short episode before the task's;
  here the probe opens the episode and its rewards count in the return.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from metarl.agents import Agent
from metarl.algos import streams as streams_lib
from metarl.algos.base import PerContextAlgorithm, TrainState, adamw, agent_from_config, register
from metarl.algos.streams import Streams
from metarl.envs.trial import TimeStep, Trial
from metarl.errors import ConfigError, check, check_float, check_int

MODES = ("hidden", "explicit", "learned", "predictor", "probing")
WINDOW_MODES = ("learned", "predictor", "probing")  #: the modes that encode a window of transitions
PREDICTOR_MODES = ("predictor", "probing")  #: the modes whose encoder learns by next-state prediction
POOLINGS = ("mean", "mean_std")
INITS = ("torch", "lecun")


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """DQN settings. Defaults: CleanRL's DQN on CartPole-v1 (the contextual-RL reference's)."""

    hidden: tuple[int, ...] = (120, 84)  #: widths of the Q-network's hidden layers (ReLU)
    lr: float = 2.5e-4  #: Adam learning rate
    adam_eps: float = 1e-8  #: Adam epsilon
    max_grad_norm: float = 0.0  #: clip gradients to this global norm (0: no clipping)
    buffer_size: int = 10_000  #: replay buffer slots
    batch_size: int = 128  #: transitions per gradient step
    gamma: float = 0.99  #: discount
    tau: float = 1.0  #: target update rate (1: copy)
    target_every: int = 500  #: env steps (all streams) between target updates
    learning_starts: int = 10_000  #: env steps (all streams) before the first gradient step
    train_every: int = 10  #: env steps of each stream per update
    gradient_steps: int = 1  #: gradient steps per update (each on its own batch)
    num_envs: int = 1  #: parallel environment streams
    eps_start: float = 1.0  #: epsilon at the start
    eps_end: float = 0.05  #: epsilon after the decay
    exploration_fraction: float = 0.5  #: fraction of the run over which epsilon decays
    double: bool = False  #: Double DQN's target (the online network picks the action)
    context_mode: str = "hidden"  #: "hidden", "explicit", "learned" (JRPL), "predictor" (IIDA) or "probing" (EPI)
    encoder_hidden: tuple[int, ...] = (16, 16)  #: the learned context encoder's hidden widths
    encoder_dim: int = 2  #: the learned context's size per transition
    history: int = 20  #: transitions the learned context is pooled over
    pooling: str = "mean"  #: "mean" or "mean_std" pooling of the encoded transitions
    predictor_hidden: tuple[int, ...] = (16, 16)  #: the predictor mode's next-state model's hidden widths
    prediction_coef: float = 1.0  #: weight of the predictor mode's prediction loss beside the Q loss
    probe_steps: int = 10  #: probing mode: steps of the probing policy opening every trial (the window's size)
    probe_hidden: tuple[int, ...] = (32, 32)  #: probing mode: hidden widths of the probing Q-network and of f0
    probe_gamma: float = 0.9  #: probing mode: discount of the probing policy's Q-learning
    probe_buffer_size: int = 2_000  #: probing mode: replay slots of probe transitions
    probe_batch_size: int = 64  #: probing mode: probe transitions per gradient step
    weight_init: str = "torch"  #: "torch": PyTorch nn.Linear's uniform initialisation (CleanRL's); "lecun": Flax's default
    schedule_steps: int | None = None  #: env steps of the exploration schedule (None: the run's own, set by the host loop)

    def __post_init__(self):
        o = "dqn"
        for name in ("buffer_size", "batch_size", "target_every", "train_every", "gradient_steps", "num_envs", "encoder_dim", "history",
                     "probe_steps", "probe_buffer_size", "probe_batch_size"):
            check_int(o, name, getattr(self, name), low=1)
        check_int(o, "learning_starts", self.learning_starts, low=0)
        check_float(o, "lr", self.lr, low=0.0, low_open=True)
        check_float(o, "adam_eps", self.adam_eps, low=0.0, low_open=True)
        check_float(o, "max_grad_norm", self.max_grad_norm, low=0.0)
        check_float(o, "gamma", self.gamma, low=0.0, high=1.0)
        check_float(o, "tau", self.tau, low=0.0, high=1.0, low_open=True)
        for name in ("eps_start", "eps_end"):
            check_float(o, name, getattr(self, name), low=0.0, high=1.0)
        check_float(o, "exploration_fraction", self.exploration_fraction, low=0.0, high=1.0, low_open=True)
        check(isinstance(self.double, bool), f"{o}: double must be true or false, got {self.double!r}", "double")
        check(self.context_mode in MODES, f"{o}: context_mode must be one of {', '.join(MODES)}, got {self.context_mode!r}", "context_mode")
        check(self.pooling in POOLINGS, f"{o}: pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}", "pooling")
        check(self.weight_init in INITS, f"{o}: weight_init must be one of {', '.join(INITS)}, got {self.weight_init!r}", "weight_init")
        check_float(o, "prediction_coef", self.prediction_coef, low=0.0, low_open=True)
        check_float(o, "probe_gamma", self.probe_gamma, low=0.0, high=1.0)
        for name in ("hidden", "encoder_hidden", "predictor_hidden", "probe_hidden"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            for width in getattr(self, name):
                check_int(o, name, width, low=1, high=65536)
        if self.schedule_steps is not None:
            check_int(o, "schedule_steps", self.schedule_steps, low=1)


PRESETS: dict[str, DQNConfig] = {"reference": DQNConfig(), "ddqn": DQNConfig(double=True)}


def dense(width: int, fan_in: int, init: str, name: str) -> nn.Dense:
    """A Dense layer initialised as PyTorch's nn.Linear (weights and biases U(-1/sqrt(fan_in),
    1/sqrt(fan_in)): CleanRL's networks) or as Flax's default (LeCun normal weights, zero biases)."""
    if init == "lecun":
        return nn.Dense(width, name=name)
    bound = 1.0 / float(np.sqrt(max(fan_in, 1)))

    def uniform(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(width, kernel_init=uniform, bias_init=uniform, name=name)


def pool_encodings(z, mask, pooling: str):
    """The encoded transitions z [..., H, D] pooled over the valid rows (mask [..., H]): their mean
    [..., D], or mean and std [..., 2 D] (`pooling="mean_std"`); zeros where no row is valid."""
    m = mask.astype(jnp.float32)[..., None]
    count = jnp.maximum(m.sum(-2), 1.0)
    mean = (z * m).sum(-2) / count
    if pooling != "mean_std":
        return mean
    var = (jnp.square(z - mean[..., None, :]) * m).sum(-2) / count
    return jnp.concatenate([mean, jnp.sqrt(var + 1e-6)], axis=-1)


class QNetwork(nn.Module):
    """[observation, context features] -> Q-values [A]; with `encoder` set, a JRPL encoder of the
    transition window [..., H, F] (mask [..., H]) gives the context features. With `predictor`
    set (IIDA), the Q-values read the encoding with its gradient stopped, and `predict_action`
    (one-hot [..., A]) also returns the predicted s' - s from (s, a, encoding): (q, prediction)."""

    num_actions: int
    hidden: tuple[int, ...]
    encoder: tuple[int, ...] = ()
    encoder_dim: int = 0
    pooling: str = "mean"
    weight_init: str = "torch"
    predictor: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, obs, context, window=None, mask=None, predict_action=None):
        parts = [obs.astype(jnp.float32), context.astype(jnp.float32)]
        encoding = []
        if self.encoder_dim:
            h = window
            for i, width in enumerate(self.encoder):
                h = nn.relu(dense(width, h.shape[-1], self.weight_init, f"encoder_{i}")(h))
            z = dense(self.encoder_dim, h.shape[-1], self.weight_init, "encoder_out")(h)  # [..., H, D]
            encoding.append(pool_encodings(z, mask, self.pooling))
        encoding = jnp.concatenate(encoding, axis=-1) if encoding else None
        if encoding is not None:
            parts.append(jax.lax.stop_gradient(encoding) if self.predictor is not None else encoding)
        x = jnp.concatenate(parts, axis=-1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(dense(width, x.shape[-1], self.weight_init, f"hidden_{i}")(x))
        q = dense(self.num_actions, x.shape[-1], self.weight_init, "q")(x)
        if predict_action is None:
            return q
        h = jnp.concatenate([obs.astype(jnp.float32), predict_action.astype(jnp.float32), encoding], axis=-1)
        for i, width in enumerate(self.predictor):
            h = nn.relu(dense(width, h.shape[-1], self.weight_init, f"predictor_{i}")(h))
        return q, dense(obs.shape[-1], h.shape[-1], self.weight_init, "predictor_out")(h)


class ProbeNetwork(nn.Module):
    """The probing mode's small networks: the probing policy's Q-values from (observation, one-hot
    probe step) and, with `action_one_hot`, also the context-free next-state model f0(s, a) ->
    s' - s: (q, prediction)."""

    num_actions: int
    hidden: tuple[int, ...]
    probe_steps: int
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, obs, step, action_one_hot=None):
        def mlp(x, prefix, width_out):
            for i, width in enumerate(self.hidden):
                x = nn.relu(dense(width, x.shape[-1], self.weight_init, f"{prefix}_{i}")(x))
            return dense(width_out, x.shape[-1], self.weight_init, f"{prefix}_out")(x)

        obs = obs.astype(jnp.float32)
        q = mlp(jnp.concatenate([obs, jax.nn.one_hot(step, self.probe_steps, dtype=jnp.float32)], axis=-1), "probe", self.num_actions)
        if action_one_hot is None:
            return q
        return q, mlp(jnp.concatenate([obs, action_one_hot.astype(jnp.float32)], axis=-1), "model0", obs.shape[-1])


# --- the learned context's window of transitions -------------------------------------------------


def transition_features(obs, action, next_obs, num_actions):
    """(s, one-hot a, s') of one transition: [2 F + A]."""
    return jnp.concatenate([obs, jax.nn.one_hot(action, num_actions, dtype=jnp.float32), next_obs], axis=-1)


def push(window, count, features):
    """The window [H, W] with `features` [W] as its newest row (the oldest dropped), and the number
    of valid rows (at most H). Rows are oldest first; the valid ones are the last `count`."""
    return jnp.concatenate([window[1:], features[None]], axis=0), jnp.minimum(count + 1, window.shape[0])


def window_mask(count, history):
    return jnp.arange(history) >= history - count


class ProbingWindow:
    """What a per-context agent with a window of transitions and a probing mode (DQN's, PPO's)
    derives from its `context_mode`, `probe_steps` and `history`."""

    @property
    def probing(self) -> bool:
        return self.context_mode == "probing"

    @property
    def window_size(self) -> int:
        """Rows of the window: the probe's steps (probing), else `history`."""
        return self.probe_steps if self.probing else self.history

    def main_params(self, params):
        """The main network's parameters (probing mode: params = {"main": ..., "probe": ...})."""
        return params["main"] if self.probing else params

    def probe_now(self, carry) -> jax.Array:
        """bool: the probing policy acts at this step (the probe has not filled the window yet)."""
        return carry[1] < self.probe_steps if self.probing else jnp.bool_(False)


@dataclasses.dataclass(frozen=True)
class DQNAgent(ProbingWindow, Agent):
    """The greedy Q-policy as an agent. carry: for the learned context, (window [H, W], valid rows,
    the previous observation); else nothing."""

    name = "dqn"

    hidden: tuple[int, ...] = (120, 84)
    context_mode: str = "hidden"
    encoder_hidden: tuple[int, ...] = (16, 16)
    encoder_dim: int = 2
    history: int = 20
    pooling: str = "mean"
    weight_init: str = "torch"
    predictor_hidden: tuple[int, ...] = (16, 16)
    probe_steps: int = 10
    probe_hidden: tuple[int, ...] = (32, 32)

    @property
    def uses_window(self) -> bool:  # the learned, predictor and probing modes encode transitions
        return self.context_mode in WINDOW_MODES

    @property
    def probe_network(self) -> ProbeNetwork:
        return ProbeNetwork(self.env.num_actions, tuple(self.probe_hidden), self.probe_steps, self.weight_init)

    @property
    def reads_context(self) -> bool:  # an explicit-context agent sees TimeStep.context
        return self.context_mode == "explicit"

    @property
    def network(self) -> QNetwork:
        learned = self.uses_window
        return QNetwork(self.env.num_actions, tuple(self.hidden), tuple(self.encoder_hidden) if learned else (),
                        self.encoder_dim if learned else 0, self.pooling, self.weight_init,
                        tuple(self.predictor_hidden) if self.context_mode in PREDICTOR_MODES else None)

    @property
    def window_width(self) -> int:
        return 2 * int(self.env.obs_shape[0]) + self.env.num_actions

    def init(self, key):
        if not self.uses_window:
            return ()
        return (jnp.zeros((self.window_size, self.window_width), jnp.float32), jnp.int32(0), jnp.zeros(self.env.obs_shape, jnp.float32))

    def observe(self, carry, timestep: TimeStep):
        """The carry updated with the transition that led to `timestep`: (the previous observation,
        the previous action, the observation it led to, `outcome_obs`, which differs from `obs`
        after an episode's end). A new trial (a new task, i.e. a new context) empties the window;
        the episodes of one trial share their context, and so the window. Probing: the window
        fills with the probe's transitions, then stays as it is for the rest of the trial."""
        if not self.uses_window:
            return carry
        window, count, last_obs = carry
        features = transition_features(last_obs, timestep.prev_action, timestep.outcome_obs, self.env.num_actions)
        pushed, pushed_count = push(window, count, features)
        if self.probing:
            pushed, pushed_count = jnp.where(count < self.probe_steps, pushed, window), pushed_count
        window = jnp.where(timestep.first, jnp.zeros_like(window), pushed)
        count = jnp.where(timestep.first, 0, pushed_count)
        return window, count, timestep.obs

    def inputs(self, carry, timestep: TimeStep):
        """The network's inputs at `timestep` (after `observe`): obs, context, window, mask."""
        context = timestep.context if self.context_mode == "explicit" else jnp.zeros((0,), jnp.float32)
        if not self.uses_window:
            return timestep.obs, context, None, None
        window, count, _ = carry
        return timestep.obs, context, window, window_mask(count, self.window_size)

    def q_values(self, params, carry, timestep):
        obs, context, window, mask = self.inputs(carry, timestep)
        return self.network.apply(self.main_params(params), obs, context, window, mask)

    def greedy_action(self, params, carry, timestep) -> jax.Array:
        action = jnp.argmax(self.q_values(params, carry, timestep)).astype(jnp.int32)
        if not self.probing:
            return action
        probe = jnp.argmax(self.probe_network.apply(params["probe"], timestep.obs, carry[1])).astype(jnp.int32)
        return jnp.where(self.probe_now(carry), probe, action)

    def act(self, params, carry, timestep, key):
        carry = self.observe(carry, timestep)
        return self.greedy_action(params, carry, timestep), carry


@struct.dataclass
class DQNTrainState(TrainState):
    """The common fields, the target network, the replay buffer and the streams."""

    target_params: Any = None  #: the target network's parameters
    buffer: Any = None  #: {field: [buffer_size, ...]} transitions
    buffer_pos: jax.Array = None  #: int32, the next slot written
    buffer_size: jax.Array = None  #: int32, slots filled
    streams: Streams = None  #: the environment streams (`algos.streams`)
    agent_carry: Any = None  #: each stream's agent carry (the learned context's window)
    probe_buffer: Any = None  #: probing mode: {"buffer", "pos", "size"} the ring of probe transitions


def replay_add(buffer, pos, size, transitions):
    """Write `transitions` {field: [n, ...]} at slots pos, pos+1, ... (mod capacity)."""
    capacity = jax.tree.leaves(buffer)[0].shape[0]
    n = jax.tree.leaves(transitions)[0].shape[0]
    idx = (pos + jnp.arange(n)) % capacity
    buffer = jax.tree.map(lambda b, t: b.at[idx].set(t.astype(b.dtype)), buffer, transitions)
    return buffer, (pos + n) % capacity, jnp.minimum(size + n, capacity)


def replay_add_masked(buffer, pos, size, transitions, mask):
    """Write the transitions whose `mask` [n] is set, in order, at slots pos, pos+1, ... (mod
    capacity); the others are dropped."""
    capacity = jax.tree.leaves(buffer)[0].shape[0]
    offsets = jnp.cumsum(mask.astype(jnp.int32)) - 1
    idx = jnp.where(mask, (pos + offsets) % capacity, capacity)  # out of range: dropped
    buffer = jax.tree.map(lambda b, t: b.at[idx].set(t.astype(b.dtype), mode="drop"), buffer, transitions)
    n = jnp.sum(mask.astype(jnp.int32))
    return buffer, (pos + n) % capacity, jnp.minimum(size + n, capacity)


def replay_sample(buffer, size, key, batch_size):
    """`batch_size` transitions drawn uniformly from the `size` filled slots."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(size, 1))
    return jax.tree.map(lambda b: b[idx], buffer)


def td_targets(reward, terminated, gamma, q_next_target, q_next_online=None):
    """DQN's r + gamma (1 - terminated) max_a Q_target(s', a), or Double DQN's with the action
    picked by the online network (`q_next_online` given). [B], [B], [B, A] -> [B]."""
    if q_next_online is None:
        best = jnp.max(q_next_target, axis=-1)
    else:
        best = jnp.take_along_axis(q_next_target, jnp.argmax(q_next_online, axis=-1)[:, None], axis=-1)[:, 0]
    return reward + gamma * (1.0 - terminated.astype(jnp.float32)) * best


def prediction_error(predicted, obs, next_obs):
    """The predictor mode's loss: the mean squared error of the predicted change s' - s. [B, F] -> []."""
    return jnp.mean(jnp.square(predicted - (next_obs - obs)))


@register
@dataclasses.dataclass(frozen=True)
class DQN(PerContextAlgorithm):
    """DQN / Double DQN. `DQN(env, DQNConfig(...))` or `make("dqn", env, ...)`."""

    name = "dqn"
    Config = DQNConfig
    presets: ClassVar[dict[str, DQNConfig]] = PRESETS
    State = DQNTrainState
    update_keys = 4  #: the pool; the rollout; the replay sample; the probe ring's sample (probing mode)

    config: DQNConfig = DQNConfig()

    @classmethod
    def default_preset(cls, env, episodes=None):
        return "reference", "CleanRL's DQN settings (the contextual-RL reference's)"

    def __post_init__(self):
        super().__post_init__()
        if not self.env.discrete:
            raise ConfigError(f"dqn: needs discrete actions; {self.env.name} has Box actions (give it action_bins, e.g. pendulum --action-bins 5)")

    def for_run(self, total_updates, saved_config=None):
        return self.with_run_length("schedule_steps", total_updates * self.steps_per_update, saved_config)

    # --- sizes and parts ------------------------------------------------------------------------
    @property
    def steps_per_update(self) -> int:
        return self.config.num_envs * self.config.train_every

    @property
    def trial(self) -> Trial:
        return streams_lib.trial(self.env, expose_context=self.config.context_mode == "explicit")

    def agent(self, episodes: int = 1) -> DQNAgent:
        return agent_from_config(DQNAgent, self.env, episodes, self.config)

    def optimizer(self) -> optax.GradientTransformation:
        return adamw(self.config.lr, eps=self.config.adam_eps, weight_decay=0.0, clip_norm=self.config.max_grad_norm)

    def epsilon(self, steps: jax.Array) -> jax.Array:
        c = self.config
        if c.schedule_steps is None:
            raise ConfigError("dqn: schedule_steps=None means the run's own length, which metarl.run.train sets; "
                              "give a number of steps to use the algorithm outside it", "schedule_steps")
        span = max(c.exploration_fraction * c.schedule_steps, 1.0)
        linear = c.eps_start + (c.eps_end - c.eps_start) * steps / span  # then held at eps_end
        return jnp.maximum(linear, c.eps_end) if c.eps_end <= c.eps_start else jnp.minimum(linear, c.eps_end)

    def update_epsilon(self, update_step: jax.Array) -> jax.Array:
        """Epsilon during update `update_step` (from the env steps done before it)."""
        return self.epsilon(update_step.astype(jnp.float32) * self.steps_per_update)

    # --- init -------------------------------------------------------------------------------------
    def _example(self):
        trial = self.trial
        timestep, _ = trial.reset(jax.random.PRNGKey(0), self.env.sample_task(jax.random.PRNGKey(0)))
        return timestep

    def init_params(self, key_params, key_env):
        agent = self.agent()
        timestep = self._example()
        predict = jnp.zeros((self.env.num_actions,), jnp.float32) if self.config.context_mode in PREDICTOR_MODES else None
        main = agent.network.init(key_params, *agent.inputs(agent.init(key_params), timestep), predict)
        if not agent.probing:
            return main
        probe = agent.probe_network.init(jax.random.fold_in(key_params, 1), timestep.obs, jnp.int32(0), predict)
        return {"main": main, "probe": probe}

    def init_extra(self, params, key_params, key_env):
        c = self.config
        agent = self.agent()
        timestep = self._example()
        obs, context, window, mask = agent.inputs(agent.init(key_params), timestep)
        slot = {"obs": obs, "context": context, "action": jnp.int32(0), "reward": jnp.float32(0), "next_obs": obs,
                "terminated": jnp.bool_(False)}
        if c.context_mode in WINDOW_MODES:
            slot.update(window=window, count=jnp.int32(0))
        buffer = jax.tree.map(lambda x: jnp.zeros((c.buffer_size,) + jnp.shape(x), jnp.asarray(x).dtype), slot)
        carry = jax.vmap(agent.init)(jax.random.split(key_params, c.num_envs))
        extra = {"target_params": params, "buffer": buffer, "buffer_pos": jnp.int32(0), "buffer_size": jnp.int32(0),
                 "streams": streams_lib.init_streams(self.trial, c.num_envs, key_env), "agent_carry": carry}
        if agent.probing:
            probe_slot = {k: slot[k] for k in ("obs", "action", "next_obs", "terminated", "window", "count")}
            ring = jax.tree.map(lambda x: jnp.zeros((c.probe_buffer_size,) + jnp.shape(x), jnp.asarray(x).dtype), probe_slot)
            extra["probe_buffer"] = {"buffer": ring, "pos": jnp.int32(0), "size": jnp.int32(0)}
        return extra

    # --- the probing mode's losses --------------------------------------------------------------
    def probe_losses(self, p, pb, valid):
        """The probing policy's Q-learning loss on its reward and f0's prediction loss, on a batch
        `pb` of probe transitions (`valid`: the ring holds some): (loss, mean probe reward)."""
        c, agent = self.config, self.agent()
        one_hot = jax.nn.one_hot(pb["action"], self.env.num_actions, dtype=jnp.float32)
        mask = jax.vmap(window_mask, in_axes=(0, None))(pb["count"], c.probe_steps)
        empty = jnp.zeros(pb["obs"].shape[:-1] + (0,), jnp.float32)
        _, predicted = agent.network.apply(p["main"], pb["obs"], empty, pb["window"], mask, one_hot)
        q_probe, predicted0 = agent.probe_network.apply(p["probe"], pb["obs"], pb["count"], one_hot)
        change = pb["next_obs"] - pb["obs"]
        error_z = jnp.mean(jnp.square(predicted - change), axis=-1)
        error_0 = jnp.mean(jnp.square(predicted0 - change), axis=-1)
        reward = jax.lax.stop_gradient(error_0 - error_z)  # what the probe so far adds to the prediction
        last = pb["terminated"] | (pb["count"] + 1 >= c.probe_steps)
        q_next = agent.probe_network.apply(p["probe"], pb["next_obs"], jnp.minimum(pb["count"] + 1, c.probe_steps - 1))
        target = jax.lax.stop_gradient(reward + c.probe_gamma * (1.0 - last.astype(jnp.float32)) * jnp.max(q_next, axis=-1))
        q = jnp.take_along_axis(q_probe, pb["action"][:, None], axis=-1)[:, 0]
        loss = jnp.mean(jnp.square(q - target)) + jnp.mean(error_0)
        return jnp.where(valid, loss, 0.0), jnp.where(valid, jnp.mean(reward), 0.0)

    # --- the update ---------------------------------------------------------------------------
    def explore_step(self, params, eps):
        """The behaviour policy of one stream: (carry, timestep, key) -> (action, carry, out), out
        holding what the replay slot keeps besides the transition (the context the agent read,
        its window, whether the probe acted)."""
        agent, windowed = self.agent(), self.config.context_mode in WINDOW_MODES

        def one(carry, timestep, key):
            carry = agent.observe(carry, timestep)
            inputs = agent.inputs(carry, timestep)
            greedy = agent.greedy_action(params, carry, timestep)
            k_explore, k_action = jax.random.split(key)
            random = jax.random.randint(k_action, (), 0, self.env.num_actions, jnp.int32)
            action = jnp.where(jax.random.uniform(k_explore) < eps, random, greedy)
            out = {"context": inputs[1]}
            if windowed:
                out.update(window=carry[0], count=carry[1])
            if agent.probing:
                out["probe"] = agent.probe_now(carry)
            return action, carry, out

        return one

    @staticmethod
    def replay_record(obs, out, action, reward, next_obs, terminated):
        """One replay slot's fields from a transition and `explore_step`'s `out`."""
        return {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "terminated": terminated, **out}

    def _update(self, ts: DQNTrainState, key_pool, key_rollout, key_sample, key_probe):
        c = self.config
        N, T = c.num_envs, c.train_every
        eps = self.update_epsilon(ts.update_step)
        streams = streams_lib.refresh_pool(ts.streams, self.env, key_pool)
        one = self.explore_step(ts.params, eps)

        def policy(carry, timestep, key, t):
            return jax.vmap(one)(carry, timestep, jax.random.split(key, N))

        def record(s):
            return self.replay_record(s.timestep.obs, s.out, s.action, s.reward, s.next_timestep.outcome_obs, s.info["terminated"])

        streams, batch, agent_carry, episodes_ended = streams_lib.collect(
            self.trial, streams, policy, record, jax.random.split(key_rollout, T), carry=ts.agent_carry
        )
        flat = jax.tree.map(lambda x: x.reshape((N * T,) + x.shape[2:]), batch)
        new, metrics = self.learn(ts, flat, key_sample, key_probe)
        metrics = {**metrics, "epsilon": eps, "episode_return": streams.last_return, "episodes_ended": episodes_ended}
        return new.replace(streams=streams, agent_carry=agent_carry), metrics

    def learn(self, ts: DQNTrainState, flat, key_sample, key_probe):
        """The update's learning half, on one update's transitions `flat` {field: [num_envs x
        train_every, ...]} (`replay_record`'s, in step order): write them into the replay buffer
        (and the probe's ring), then, past `learning_starts`, the gradient steps and the target
        network's move. -> (the train state, metrics). The host-stepped loop
        (`metarl.algos.host`) calls it with transitions its Gymnasium environments made."""
        c = self.config
        agent = self.agent()
        params = ts.params
        windowed, probing = c.context_mode in WINDOW_MODES, agent.probing
        predictor = c.context_mode in PREDICTOR_MODES
        flat = dict(flat)
        probe_buffer = ts.probe_buffer
        if probing:
            is_probe = flat.pop("probe")
            ring = {k: flat[k] for k in ("obs", "action", "next_obs", "terminated", "window", "count")}
            ring, ring_pos, ring_size = replay_add_masked(probe_buffer["buffer"], probe_buffer["pos"], probe_buffer["size"], ring, is_probe)
            probe_buffer = {"buffer": ring, "pos": ring_pos, "size": ring_size}
        buffer, pos, size = replay_add(ts.buffer, ts.buffer_pos, ts.buffer_size, flat)
        steps_after = (ts.update_step + 1) * self.steps_per_update

        def q_inputs(mb, next_state: bool):
            obs = mb["next_obs"] if next_state else mb["obs"]
            if not windowed:
                return obs, mb["context"], None, None
            window, count = mb["window"], mb["count"]
            if next_state:  # the window at s' also holds the transition (s, a, s') (probing: while the probe lasts)
                features = transition_features(mb["obs"], mb["action"], mb["next_obs"], self.env.num_actions)
                pushed, pushed_count = jax.vmap(push)(window, count, features)
                if probing:
                    grow = count < c.probe_steps
                    pushed = jnp.where(grow[:, None, None], pushed, window)
                window, count = pushed, pushed_count
            return obs, mb["context"], window, jax.vmap(window_mask, in_axes=(0, None))(count, agent.window_size)

        def loss_fn(p, mb, target_params, pb):
            net = agent.network
            main, main_target = agent.main_params(p), agent.main_params(target_params)
            if predictor:  # IIDA: the encoder learns from predicting s' - s, the Q-head reads it detached
                one_hot = jax.nn.one_hot(mb["action"], self.env.num_actions, dtype=jnp.float32)
                q_all, predicted = net.apply(main, *q_inputs(mb, False), one_hot)
                prediction_loss = prediction_error(predicted, mb["obs"], mb["next_obs"])
            else:
                q_all, prediction_loss = net.apply(main, *q_inputs(mb, False)), jnp.float32(0.0)
            q = jnp.take_along_axis(q_all, mb["action"][:, None], axis=-1)[:, 0]
            next_inputs = q_inputs(mb, True)
            q_next_target = net.apply(main_target, *next_inputs)
            q_next_online = net.apply(main, *next_inputs) if c.double else None
            target = jax.lax.stop_gradient(td_targets(mb["reward"], mb["terminated"], c.gamma, q_next_target, q_next_online))
            td_loss = jnp.mean(jnp.square(q - target))
            total = td_loss + c.prediction_coef * prediction_loss
            probe_loss, probe_reward = (self.probe_losses(p, pb, probe_buffer["size"] > 0) if probing
                                        else (jnp.float32(0.0), jnp.float32(0.0)))
            return total + probe_loss, (td_loss, jnp.mean(q), prediction_loss, probe_loss, probe_reward)

        def gradient_step(carry, keys):
            p, opt_state, target_params = carry
            key, key_p = keys
            mb = replay_sample(buffer, size, key, c.batch_size)
            pb = replay_sample(probe_buffer["buffer"], probe_buffer["size"], key_p, c.probe_batch_size) if probing else None
            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, mb, target_params, pb)
            updates, opt_state = self.optimizer().update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state, target_params), aux

        names = ["loss", "q_mean"] + (["prediction_loss"] if predictor else []) + (["probe_loss", "probe_reward"] if probing else [])

        def pick(aux):
            loss, q_mean, prediction_loss, probe_loss, probe_reward = aux
            values = {"loss": loss, "q_mean": q_mean, "prediction_loss": prediction_loss, "probe_loss": probe_loss, "probe_reward": probe_reward}
            return {n: values[n] for n in names}

        def learn(operand):
            if c.gradient_steps == 1:
                (p, opt_state, target_params), aux = gradient_step(operand, (key_sample, key_probe))
            else:  # the target network stays fixed over one update's steps
                keys = (jax.random.split(key_sample, c.gradient_steps), jax.random.split(key_probe, c.gradient_steps))
                (p, opt_state, target_params), aux = jax.lax.scan(gradient_step, operand, keys)
                aux = tuple(jnp.mean(x) for x in aux)
            crossed = (steps_after // c.target_every) > ((steps_after - self.steps_per_update) // c.target_every)
            moved = jax.tree.map(lambda t, o: c.tau * o + (1.0 - c.tau) * t, target_params, p)
            target_params = jax.tree.map(lambda m, t: jnp.where(crossed, m, t), moved, target_params)
            return (p, opt_state, target_params), {**pick(aux), "learning": jnp.float32(1.0)}

        def wait(operand):
            return operand, {**{n: jnp.float32(0.0) for n in names}, "learning": jnp.float32(0.0)}

        (params, opt_state, target_params), stats = jax.lax.cond(
            steps_after > c.learning_starts, learn, wait, (params, ts.opt_state, ts.target_params)
        )
        new = ts.replace(params=params, opt_state=opt_state, target_params=target_params, buffer=buffer, buffer_pos=pos,
                         buffer_size=size, probe_buffer=probe_buffer)
        return new, stats
