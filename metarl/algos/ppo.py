"""PPO (Schulman et al. 2017) with a feed-forward actor-critic: the first per-context policy, and
the hand-designed baseline of learned update rules and contextual RL.

A task of the family is a *context* (e.g. a gymnax family's sampled physics). `num_envs` streams
each run one episode per task (`Trial(env, 1, resample=True)`), every new episode on the next task
of a pool sampled once per update, through `metarl.rollout`; the streams' states persist across
updates. One `update` = `num_steps` steps of every stream, GAE, then `epochs` passes of
`minibatches` minibatches of the flattened samples: one jittable, vmappable (over seeds) function.

Termination and truncation are distinct: at a time-limit truncation the advantage bootstraps from
the value of the state the episode was cut in (`TimeStep.outcome_obs`); a termination does not
bootstrap. Discrete actions: a categorical policy; Box actions: a Gaussian with a learned
state-independent log-std, its samples clipped to the box when stepping the environment (the
unclipped sample is what the loss sees).

Defaults: CleanRL's / PureJaxRL's CartPole PPO (4 envs x 128 steps, 4 epochs of 4 minibatches,
Adam 2.5e-4 eps 1e-5 annealed to 0, clip 0.2, entropy 0.01, value 0.5, gamma 0.99, GAE 0.95,
global-norm clip 0.5, tanh 64x64, advantages standardised per minibatch). Presets: "pendulum"
(RL Zoo's tuned Pendulum-v1 PPO without gSDE: gamma 0.9, 10 epochs, lr 1e-3, ...).

Context modes (`context_mode`): "hidden" (the policy reads the observation alone), "explicit"
(the task's context vector, each factor's multiplier of its default for the contextual families,
appended to the observation in training and at test), "learned" (JRPL: an encoder MLP
`encoder_hidden` -> `encoder_dim` of each of the last `history` transitions (s, a, s') of the
current context, mean- (or mean-and-std-) pooled and appended to the observation of both the policy
and the value MLP, trained through the PPO loss alone) and "predictor" (IIDA: the same encoder and
window, trained only by a next-state predictor (s, a, z) -> s' - s on each update's on-policy
transitions, the policy and value reading z with its gradient stopped) and "probing" (EPI: the
first `probe_steps` steps of every trial are taken by a probing policy, its own small actor-critic
over the observation and the probe step, whose transitions fill the window, which then stays fixed
for the rest of the trial; the policy reads the predictor mode's encoding of that probe). As in
DQN's probing mode, the probing policy's reward per probe step is how much the probe so far
improves the prediction of the next state: the squared error of a context-free next-state model
f0(s, a) minus that of the encoder's predictor f(s, a, z), both computed with the update's
parameters, gradients stopped; plus `probe_task_coef` (1) x the environment's reward, since the
probe acts in the task's own episode (EPI probes in a separate one): with the information reward
alone, often negative early on, a probe learned to end CartPole's episodes within its 10 steps. The probe learns by PPO on that reward (discount `probe_gamma`,
its own value head, the probe ending at its last step), the main policy by PPO on the probe-free
steps (its value on every step: the probe's rewards count in the return), f0 and the predictor by
their prediction losses on every transition. The window is DQN's (`algos.dqn`): it empties when a
new trial (a new context) starts and keeps the last `history` transitions (probing: the probe's).

The evaluation hook returns the return of each held-out context: `evaluate(train_state, key,
tasks)` -> [tasks, episodes] returns of the greedy (mean) policy.
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
from metarl.algos.base import PerContextAlgorithm, TrainState, adamw, agent_from_config, check_ppo_settings, register, sample_or_greedy
from metarl.algos.dqn import POOLINGS, ProbingWindow, pool_encodings, prediction_error, push, window_mask
from metarl.algos.streams import Streams
from metarl.envs.trial import TimeStep, Trial, prev_action_features
from metarl.errors import check, check_float, check_int
from metarl.nets.mlp import ACTIVATIONS, MLPActorCritic
from metarl.ops.gae import generalized_advantage_estimation
from metarl.ops.ppo import clipped_value_loss, masked_mean, ppo_clipped_policy_loss, standardise



CONTEXT_MODES = ("hidden", "explicit", "learned", "predictor", "probing")
WINDOW_MODES = ("learned", "predictor", "probing")  #: the modes that encode a window of transitions
PREDICTOR_MODES = ("predictor", "probing")  #: the modes whose encoder learns by next-state prediction


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO settings. Defaults: CleanRL's / PureJaxRL's CartPole-v1 run."""

    num_envs: int = 4  #: parallel environment streams
    num_steps: int = 128  #: steps of every stream per update
    epochs: int = 4  #: passes over each update's data
    minibatches: int = 4  #: minibatches per pass
    lr: float = 2.5e-4  #: Adam learning rate
    lr_decay_updates: int = 0  #: decay the learning rate linearly to 0 over this many updates (0: constant)
    adam_eps: float = 1e-5  #: Adam epsilon
    max_grad_norm: float = 0.5  #: clip gradients to this global norm (0: no clipping)
    gamma: float = 0.99  #: discount
    gae_lambda: float = 0.95  #: GAE lambda
    clip_eps: float = 0.2  #: PPO ratio clip range
    value_clip_eps: float = 0.0  #: PPO value clip range (0: unclipped value loss)
    ent_coef: float = 0.01  #: entropy bonus coefficient
    vf_coef: float = 0.5  #: value loss coefficient
    normalize_advantages: bool = True  #: standardise advantages within each minibatch
    hidden: tuple[int, ...] = (64, 64)  #: widths of the policy and the value MLPs' hidden layers
    activation: str = "tanh"  #: "tanh" or "relu"
    init_log_std: float = 0.0  #: initial log-std of a Gaussian policy (Box actions)
    context_mode: str = "hidden"  #: "hidden", "explicit" (the context appended), "learned" (JRPL), "predictor" (IIDA) or "probing" (EPI)
    encoder_hidden: tuple[int, ...] = (16, 16)  #: the learned context encoder's hidden widths (learned, predictor)
    encoder_dim: int = 2  #: the learned context's size per transition
    history: int = 20  #: transitions the learned context is pooled over
    pooling: str = "mean"  #: "mean" or "mean_std" pooling of the encoded transitions
    predictor_hidden: tuple[int, ...] = (16, 16)  #: the predictor mode's next-state model's hidden widths
    prediction_coef: float = 1.0  #: weight of the predictor (and probing) modes' prediction losses beside the PPO loss
    probe_steps: int = 10  #: probing mode: steps of the probing policy opening every trial (the window's size)
    probe_hidden: tuple[int, ...] = (32, 32)  #: probing mode: hidden widths of the probing actor-critic and of f0
    probe_gamma: float = 0.9  #: probing mode: discount of the probing policy's return
    #: probing mode: weight of the environment's reward in the probe's reward, beside the information
    #: reward (0: EPI's information reward alone; with it a probe learned to end CartPole's episodes)
    probe_task_coef: float = 1.0

    def __post_init__(self):
        o = "ppo"
        check(self.context_mode in CONTEXT_MODES,
              f"{o}: context_mode must be one of {', '.join(CONTEXT_MODES)}, got {self.context_mode!r}", "context_mode")
        check(self.pooling in POOLINGS, f"{o}: pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}", "pooling")
        check_int(o, "encoder_dim", self.encoder_dim, low=1, high=4096)
        check_int(o, "history", self.history, low=1, high=100_000)
        check_float(o, "prediction_coef", self.prediction_coef, low=0.0, low_open=True)
        check_int(o, "probe_steps", self.probe_steps, low=1, high=100_000)
        check_float(o, "probe_gamma", self.probe_gamma, low=0.0, high=1.0)
        check_float(o, "probe_task_coef", self.probe_task_coef, low=0.0)
        for name in ("encoder_hidden", "predictor_hidden", "probe_hidden"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            for width in getattr(self, name):
                check_int(o, name, width, low=1, high=65536)
        for name in ("num_envs", "num_steps", "epochs", "minibatches"):
            check_int(o, name, getattr(self, name), low=1)
        check((self.num_envs * self.num_steps) % self.minibatches == 0,
              f"{o}: num_envs x num_steps ({self.num_envs * self.num_steps}) must be a multiple of minibatches ({self.minibatches})")
        check_ppo_settings(o, self)
        check(isinstance(self.normalize_advantages, bool), f"{o}: normalize_advantages must be true or false")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for width in self.hidden:
            check_int(o, "hidden", width, low=1, high=65536)
        check(self.activation in ACTIVATIONS, f"{o}: activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        check_float(o, "init_log_std", self.init_log_std)


PRESETS: dict[str, PPOConfig] = {
    "reference": PPOConfig(),
    # RL Zoo's tuned CartPole-v1 PPO (8 envs x 32 steps, 20 epochs of the whole 256-step batch,
    # gamma 0.98, GAE lambda 0.8, lr 1e-3 decayed linearly, no entropy bonus), without its clip-range
    # decay: every one of 8 seeds at 500 after 204,800 steps where "reference" left 2 of 8 near 300.
    "cartpole": PPOConfig(num_envs=8, num_steps=32, epochs=20, minibatches=1, lr=1e-3, gamma=0.98, gae_lambda=0.8, ent_coef=0.0),
    # RL Zoo's tuned Pendulum-v1 PPO (4 envs x 1024 steps, 10 epochs of 64-sample minibatches,
    # gamma 0.9, lr 1e-3, no entropy bonus), without its gSDE exploration.
    "pendulum": PPOConfig(num_envs=4, num_steps=1024, epochs=10, minibatches=64, lr=1e-3, gamma=0.9, ent_coef=0.0, clip_eps=0.2),
}


class EncodedActorCritic(nn.Module):
    """The learned and predictor modes' network: a JRPL encoder of the transition window [..., H,
    W] (mask [..., H]), pooled, appended to the observation of `MLPActorCritic` (its parameters
    under "actor_critic", so the log-std stays at ["params"]["actor_critic"]["log_std"]). With
    `predictor` set (IIDA), the policy and value read the encoding with its gradient stopped, and
    `predict_action` (the action's features [..., A]) also returns the predicted s' - s from (s, a,
    encoding): (out, value, prediction)."""

    action_dim: int
    discrete: bool
    hidden: tuple[int, ...]
    activation: str
    encoder: tuple[int, ...]
    encoder_dim: int
    pooling: str
    predictor: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, obs, window, mask, predict_action=None):
        obs = obs.astype(jnp.float32)
        h = window.astype(jnp.float32)
        for i, width in enumerate(self.encoder):
            h = nn.relu(nn.Dense(width, name=f"encoder_{i}")(h))
        encoding = pool_encodings(nn.Dense(self.encoder_dim, name="encoder_out")(h), mask, self.pooling)
        read = jax.lax.stop_gradient(encoding) if self.predictor is not None else encoding
        actor_critic = MLPActorCritic(self.action_dim, self.discrete, self.hidden, self.activation, name="actor_critic")
        out, value = actor_critic(jnp.concatenate([obs, read], axis=-1))
        if predict_action is None:
            return out, value
        p = jnp.concatenate([obs, predict_action.astype(jnp.float32), encoding], axis=-1)
        for i, width in enumerate(self.predictor):
            p = nn.relu(nn.Dense(width, name=f"predictor_{i}")(p))
        return out, value, nn.Dense(obs.shape[-1], name="predictor_out")(p)


class ProbeActorCritic(nn.Module):
    """The probing mode's small networks: the probing policy and its value from (observation,
    one-hot probe step) (an `MLPActorCritic`, "policy") and, with `action` (its features [..., A]),
    also the context-free next-state model f0(s, a) -> s' - s: (out, value) or (out, value, f0)."""

    action_dim: int
    discrete: bool
    hidden: tuple[int, ...]
    probe_steps: int
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs, step, action=None):
        obs = obs.astype(jnp.float32)
        x = jnp.concatenate([obs, jax.nn.one_hot(step, self.probe_steps, dtype=jnp.float32)], axis=-1)
        out, value = MLPActorCritic(self.action_dim, self.discrete, self.hidden, self.activation, name="policy")(x)
        if action is None:
            return out, value
        h = jnp.concatenate([obs, action.astype(jnp.float32)], axis=-1)
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, name=f"model0_{i}")(h))
        return out, value, nn.Dense(obs.shape[-1], name="model0_out")(h)


def policy_log_std(params):
    """The Gaussian policy's log-std, in any mode's parameters (probing: the main policy's)."""
    if "main" in params:
        params = params["main"]
    inner = params["params"]
    return inner["actor_critic"]["log_std"] if "actor_critic" in inner else inner["log_std"]


def probe_log_std(params):
    """The probing policy's log-std (probing mode, Box actions)."""
    return params["probe"]["params"]["policy"]["log_std"]


@struct.dataclass
class PPOTrainState(TrainState):
    """The common fields, the environment streams and the agents' carries (the learned context's
    windows), carried from update to update."""

    streams: Streams = None  #: the environment streams (`algos.streams`)
    agent_carry: Any = ()  #: each stream's agent carry (window modes: window, valid rows, last observation)


@dataclasses.dataclass(frozen=True)
class PPOAgent(ProbingWindow, Agent):
    """The trained policy as an agent (carry: nothing); greedy = the most likely action, or the
    Gaussian's mean clipped to the box."""

    name = "ppo"

    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    greedy: bool = True
    context_mode: str = "hidden"
    encoder_hidden: tuple[int, ...] = (16, 16)
    encoder_dim: int = 2
    history: int = 20
    pooling: str = "mean"
    predictor_hidden: tuple[int, ...] = (16, 16)
    probe_steps: int = 10
    probe_hidden: tuple[int, ...] = (32, 32)

    @property
    def reads_context(self) -> bool:  # an explicit-context agent sees TimeStep.context
        return self.context_mode == "explicit"

    @property
    def uses_window(self) -> bool:  # the learned, predictor and probing modes encode transitions
        return self.context_mode in WINDOW_MODES

    @property
    def probe_network(self) -> ProbeActorCritic:
        return ProbeActorCritic(self.env.action_size, self.env.discrete, tuple(self.probe_hidden), self.probe_steps, self.activation)

    @property
    def network(self) -> nn.Module:
        if not self.uses_window:
            return MLPActorCritic(self.env.action_size, self.env.discrete, tuple(self.hidden), self.activation)
        return EncodedActorCritic(self.env.action_size, self.env.discrete, tuple(self.hidden), self.activation,
                                  tuple(self.encoder_hidden), self.encoder_dim, self.pooling,
                                  tuple(self.predictor_hidden) if self.context_mode in PREDICTOR_MODES else None)

    def features(self, obs, context):
        """The observation, with the context appended in the explicit mode."""
        obs = obs.astype(jnp.float32)
        if self.context_mode != "explicit":
            return obs
        return jnp.concatenate([obs, jnp.broadcast_to(context, obs.shape[:-1] + context.shape[-1:]).astype(jnp.float32)], axis=-1)

    @property
    def window_width(self) -> int:
        return 2 * int(self.env.obs_shape[0]) + self.env.action_size

    def action_features(self, action):
        """An action as the window and the predictor read it: one-hot (Discrete) or the vector (Box)."""
        if self.env.discrete:
            return jax.nn.one_hot(action, self.env.num_actions, dtype=jnp.float32)
        return action.reshape(action.shape[:action.ndim - len(self.env.action_shape)] + (-1,)).astype(jnp.float32)

    def init(self, key):
        if not self.uses_window:
            return ()
        return (jnp.zeros((self.window_size, self.window_width), jnp.float32), jnp.int32(0), jnp.zeros(self.env.obs_shape, jnp.float32))

    def observe(self, carry, timestep: TimeStep):
        """One stream's carry with the transition that led to `timestep` pushed into the window (the
        previous observation, the action taken, `outcome_obs`); a new trial (a new context) empties it.
        Probing: the window fills with the probe's transitions, then stays as it is for the trial."""
        if not self.uses_window:
            return carry
        window, count, last_obs = carry
        features = jnp.concatenate([last_obs, prev_action_features(timestep, self.env), timestep.outcome_obs.astype(jnp.float32)], axis=-1)
        pushed, pushed_count = self.push(window, count, features)
        window = jnp.where(timestep.first, jnp.zeros_like(window), pushed)
        count = jnp.where(timestep.first, 0, pushed_count)
        return window, count, timestep.obs.astype(jnp.float32)

    def push(self, window, count, features):
        """`push` of the window, except that a full probe (probing) is kept as it is."""
        pushed, pushed_count = push(window, count, features)
        if self.probing:
            pushed = jnp.where(count < self.probe_steps, pushed, window)
        return pushed, pushed_count

    def inputs(self, carry, timestep: TimeStep) -> tuple:
        """The network's inputs at `timestep` (after `observe`): (features,) or (features, window, mask)."""
        x = self.features(timestep.obs, timestep.context)
        if not self.uses_window:
            return (x,)
        window, count, _ = carry
        return x, window, window_mask(count, self.window_size)

    def act(self, params, carry, timestep, key):
        carry = self.observe(carry, timestep)
        out, _ = self.network.apply(self.main_params(params), *self.inputs(carry, timestep))
        box = not self.env.discrete
        action = self._choose(out, policy_log_std(params) if box else None, key)
        if self.probing:
            probe_out, _ = self.probe_network.apply(params["probe"], timestep.obs, carry[1])
            action = jnp.where(self.probe_now(carry), self._choose(probe_out, probe_log_std(params) if box else None, key), action)
        return action, carry

    def _choose(self, out, log_std_, key):
        if self.env.discrete:
            return sample_or_greedy(key, out, self.greedy)
        space = self.env.action_space()
        sample = out if self.greedy else out + jnp.exp(log_std_) * jax.random.normal(key, out.shape)
        return jnp.clip(sample, space.low, space.high).reshape(self.env.action_shape)


def gaussian_log_prob(x, mean, log_std_):
    return jnp.sum(-0.5 * jnp.square((x - mean) / jnp.exp(log_std_)) - log_std_ - 0.5 * np.log(2 * np.pi), axis=-1)


@register
@dataclasses.dataclass(frozen=True)
class PPO(PerContextAlgorithm):
    """PPO. `PPO(env, PPOConfig(...))` or `make("ppo", env, ...)`."""

    name = "ppo"
    Config = PPOConfig
    presets: ClassVar[dict[str, PPOConfig]] = PRESETS
    State = PPOTrainState
    update_keys = 3  #: the pool; the rollout; the epochs' permutations

    config: PPOConfig = PPOConfig()

    @classmethod
    def default_preset(cls, env, episodes=None):
        if env.discrete:
            return "cartpole", "discrete actions: RL Zoo's tuned CartPole-v1 settings (500 on every seed in 204,800 steps)"
        return "pendulum", "continuous actions: RL Zoo's Pendulum-v1 settings (-185.3 in 409,600 steps)"

    @property
    def trial(self) -> Trial:
        return streams_lib.trial(self.env, expose_context=self.config.context_mode == "explicit")

    @property
    def steps_per_update(self) -> int:
        return self.config.num_envs * self.config.num_steps

    @property
    def network(self) -> MLPActorCritic:
        return self.agent().network

    def agent(self, episodes: int = 1, greedy: bool = True) -> PPOAgent:
        return agent_from_config(PPOAgent, self.env, episodes, self.config, greedy=greedy)

    def optimizer(self) -> optax.GradientTransformation:
        c = self.config
        lr = c.lr
        if c.lr_decay_updates:
            lr = optax.linear_schedule(c.lr, 0.0, c.lr_decay_updates * c.epochs * c.minibatches)
        return adamw(lr, eps=c.adam_eps, clip_norm=c.max_grad_norm)

    def init_params(self, key_params, key_env):
        timestep, _ = self.trial.reset(jax.random.PRNGKey(0), self.env.sample_task(jax.random.PRNGKey(0)))
        agent = self.agent()
        predict = (jnp.zeros((self.env.action_size,), jnp.float32),) if self.config.context_mode in PREDICTOR_MODES else ()
        params = self.network.init(key_params, *agent.inputs(agent.init(key_params), timestep), *predict)
        if agent.probing:
            probe = agent.probe_network.init(jax.random.fold_in(key_params, 1), timestep.obs, jnp.int32(0), *predict)
            params = {"main": params, "probe": probe}
        if not self.env.discrete:
            params = jax.tree_util.tree_map_with_path(
                lambda p, x: jnp.full_like(x, self.config.init_log_std) if getattr(p[-1], "key", None) == "log_std" else x, params
            )
        return params

    def init_extra(self, params, key_params, key_env):
        carry = jax.vmap(self.agent().init)(jax.random.split(key_params, self.config.num_envs))
        return {"streams": streams_lib.init_streams(self.trial, self.config.num_envs, key_env), "agent_carry": carry}

    def _policy(self, params, inputs):
        out, value = self.network.apply(self.agent().main_params(params), *inputs)
        return out, value

    def _sample(self, params, out, key, log_std_fn=policy_log_std):
        if self.env.discrete:
            action = jax.random.categorical(key, out).astype(jnp.int32)
            logp = jnp.take_along_axis(jax.nn.log_softmax(out), action[..., None], axis=-1)[..., 0]
            return action, action, logp
        std_log = log_std_fn(params)
        raw = out + jnp.exp(std_log) * jax.random.normal(key, out.shape)
        space = self.env.action_space()
        return raw, jnp.clip(raw, space.low, space.high), gaussian_log_prob(raw, out, std_log)

    def _log_prob_entropy(self, params, out, action, log_std_fn=policy_log_std):
        if self.env.discrete:
            logp_all = jax.nn.log_softmax(out)
            logp = jnp.take_along_axis(logp_all, action[..., None], axis=-1)[..., 0]
            return logp, -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
        std_log = log_std_fn(params)
        entropy = jnp.sum(std_log + 0.5 * np.log(2 * np.pi * np.e)) * jnp.ones(out.shape[:-1])
        return gaussian_log_prob(action, out, std_log), entropy

    def _update(self, ts: PPOTrainState, key_pool, key_rollout, key_epochs):
        c = self.config
        N, T, M = c.num_envs, c.num_steps, c.minibatches
        params = ts.params
        streams = streams_lib.refresh_pool(ts.streams, self.env, key_pool)

        agent = self.agent()
        windowed, predictor, probing = agent.uses_window, c.context_mode in PREDICTOR_MODES, agent.probing

        def policy(carry, timestep, key, t):
            carry = jax.vmap(agent.observe)(carry, timestep)
            inputs = jax.vmap(agent.inputs)(carry, timestep)
            out, value = self._policy(params, inputs)
            key_main, key_probe = jax.random.split(key) if probing else (key, None)
            raw, action, logp = self._sample(params, out, key_main)
            extra = {"window": carry[0], "count": carry[1]} if windowed else {}
            if probing:  # the probe acts until it has filled the window; its sample and log-prob are recorded there
                probe_out, probe_value = agent.probe_network.apply(params["probe"], timestep.obs, carry[1])
                probe = jax.vmap(agent.probe_now)(carry)

                def pick(a, b):
                    return jnp.where(probe.reshape(probe.shape + (1,) * (a.ndim - 1)), a, b)

                p_raw, p_action, p_logp = self._sample(params, probe_out, key_probe, probe_log_std)
                raw, action, logp = pick(p_raw, raw), pick(p_action, action), pick(p_logp, logp)
                extra.update(probe=probe, probe_value=probe_value)
            if windowed:
                extra["action"] = action
            return action, carry, {"raw": raw, "logp": logp, "value": value, **extra}

        def record(s):
            row = {
                "obs": agent.features(s.timestep.obs, s.timestep.context),
                "raw": s.out["raw"],
                "logp": s.out["logp"],
                "value": s.out["value"],
                "reward": s.reward,
                "terminated": s.info["terminated"],
                "truncated": s.info["truncated"],
                # the true next state (before auto-reset), in the context it was reached in
                "next_obs": agent.features(s.next_timestep.outcome_obs, s.timestep.context),
            }
            if windowed:
                row.update(window=s.out["window"], count=s.out["count"], action=agent.action_features(s.out["action"]))
            if probing:
                row.update(probe=s.out["probe"], probe_value=s.out["probe_value"])
            return row

        streams, batch, agent_carry, episodes_ended = streams_lib.collect(
            self.trial, streams, policy, record, jax.random.split(key_rollout, T), carry=ts.agent_carry)
        mask_of = jax.vmap(window_mask, in_axes=(0, None))

        def net_inputs(obs, window, count):
            """[K, ...] rows' network inputs."""
            return (obs,) if not windowed else (obs, window, mask_of(count, agent.window_size))

        if windowed:  # the window at s' also holds (s, a, s') (probing: while the probe lasts)
            flat_bt = jax.tree.map(lambda x: x.reshape((T * N,) + x.shape[2:]), batch)
            features = jnp.concatenate([flat_bt["obs"], flat_bt["action"], flat_bt["next_obs"]], axis=-1)
            next_window, next_count = jax.vmap(agent.push)(flat_bt["window"], flat_bt["count"], features)
            _, v_next = self._policy(params, net_inputs(flat_bt["next_obs"], next_window, next_count))
            v_next = v_next.reshape((T, N))
        else:
            _, v_next = self._policy(params, (batch["next_obs"],))  # [T, N]
        done = batch["terminated"] | batch["truncated"]
        discount = c.gamma * (1.0 - batch["terminated"].astype(jnp.float32))
        trace = c.gamma * (1.0 - done.astype(jnp.float32))
        gae = jax.vmap(generalized_advantage_estimation, in_axes=(1, 1, 1, 1, None, 1), out_axes=1)
        advantage = gae(batch["reward"], discount, batch["value"], v_next, c.gae_lambda, trace)
        data = {"obs": batch["obs"], "raw": batch["raw"], "logp": batch["logp"], "value": batch["value"],
                "advantage": advantage, "target": advantage + batch["value"]}
        if windowed:
            data.update(window=batch["window"], count=batch["count"])
        if predictor:
            data.update(action=batch["action"], next_obs=batch["next_obs"])
        probe_metrics = {}
        if probing:  # the probe's reward: what the probe so far adds to predicting s' - s, by the update's models
            probe_reward, probe_next = self.probe_rewards(params, flat_bt)
            probe_reward, probe_next = probe_reward.reshape((T, N)), probe_next.reshape((T, N))
            is_probe = batch["probe"]
            goes_on = is_probe & ~done & (batch["count"] + 1 < c.probe_steps)  # the probe's return ends at its last step
            probe_discount = c.probe_gamma * goes_on.astype(jnp.float32)
            info = jnp.where(is_probe, probe_reward, 0.0)
            probe_reward = jnp.where(is_probe, probe_reward + c.probe_task_coef * batch["reward"], 0.0)
            probe_advantage = gae(probe_reward, probe_discount, batch["probe_value"], probe_next, c.gae_lambda, probe_discount)
            data.update(probe=is_probe, probe_value=batch["probe_value"], probe_advantage=probe_advantage,
                        probe_target=probe_advantage + batch["probe_value"])
            probe_metrics = {"probe_reward": masked_mean(info, is_probe), "probe_share": jnp.mean(is_probe.astype(jnp.float32))}
        flat = jax.tree.map(lambda x: x.reshape((N * T,) + x.shape[2:]), data)
        vclip = c.value_clip_eps if c.value_clip_eps > 0 else None

        def loss_fn(p, mb):
            inputs = net_inputs(mb["obs"], mb.get("window"), mb.get("count"))
            if predictor:  # IIDA: the encoder learns from predicting s' - s; the policy and value read it detached
                out, value, predicted = self.network.apply(agent.main_params(p), *inputs, mb["action"])
                prediction_loss = prediction_error(predicted, mb["obs"], mb["next_obs"])
            else:
                out, value = self._policy(p, inputs)
                prediction_loss = jnp.float32(0.0)
            logp, entropy = self._log_prob_entropy(p, out, mb["raw"])
            main = ~mb["probe"] if probing else None  # the main policy's loss skips the steps the probe took
            adv = mb["advantage"]
            if c.normalize_advantages:
                adv = standardise(adv, main) if probing else (adv - adv.mean()) / (adv.std() + 1e-8)
            pg, aux = ppo_clipped_policy_loss(logp, mb["logp"], adv, c.clip_eps, main)
            v_loss = clipped_value_loss(value, mb["target"], mb["value"], vclip)
            ent = masked_mean(entropy, main)
            extra = {"prediction_loss": prediction_loss} if predictor else {}
            total = pg + c.vf_coef * v_loss - c.ent_coef * ent + c.prediction_coef * prediction_loss
            if probing:
                total_probe, probe_stats = self.probe_loss(p, mb)
                total = total + total_probe
                extra.update(probe_stats)
            return total, {"policy_loss": pg, "value_loss": v_loss, "entropy": ent, **aux, **extra}

        optimizer = self.optimizer()

        def minibatch(carry, mb):
            p, opt_state = carry
            (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, mb)
            updates, opt_state = optimizer.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), {**stats, "grad_norm": optax.tree.norm(grads)}

        def epoch(carry, key):
            perm = jax.random.permutation(key, N * T)
            mbs = jax.tree.map(lambda x: jnp.take(x, perm, axis=0).reshape((M, -1) + x.shape[1:]), flat)
            return jax.lax.scan(minibatch, carry, mbs)

        (params, opt_state), stats = jax.lax.scan(epoch, (params, ts.opt_state), jax.random.split(key_epochs, c.epochs))
        metrics = {**stats, **probe_metrics, "episode_return": streams.last_return, "episodes_ended": episodes_ended}
        return ts.replace(params=params, opt_state=opt_state, streams=streams, agent_carry=agent_carry), metrics

    # --- the probing mode ----------------------------------------------------------------------------
    def probe_rewards(self, params, rows):
        """The probing policy's reward on transitions `rows` ({obs, action (features), next_obs,
        window, count}: [K, ...]): the squared error of f0(s, a) minus that of f(s, a, z) predicting
        s' - s, z the encoding of the window the step was taken with (gradients stopped); and the
        probe's value at the next step. -> ([K], [K])."""
        c, agent = self.config, self.agent()
        mask = jax.vmap(window_mask, in_axes=(0, None))(rows["count"], c.probe_steps)
        _, _, predicted = agent.network.apply(params["main"], rows["obs"], rows["window"], mask, rows["action"])
        _, _, predicted0 = agent.probe_network.apply(params["probe"], rows["obs"], rows["count"], rows["action"])
        change = rows["next_obs"] - rows["obs"]
        reward = jnp.mean(jnp.square(predicted0 - change), axis=-1) - jnp.mean(jnp.square(predicted - change), axis=-1)
        _, next_value = agent.probe_network.apply(params["probe"], rows["next_obs"], jnp.minimum(rows["count"] + 1, c.probe_steps - 1))
        return jax.lax.stop_gradient(reward), jax.lax.stop_gradient(next_value)

    def probe_loss(self, p, mb):
        """The probing policy's PPO loss on the minibatch's probe steps, its value loss there, and
        f0's prediction loss on every transition: (loss, metrics)."""
        c, agent = self.config, self.agent()
        out, value, predicted0 = agent.probe_network.apply(p["probe"], mb["obs"], mb["count"], mb["action"])
        logp, entropy = self._log_prob_entropy(p, out, mb["raw"], probe_log_std)
        probe = mb["probe"]
        adv = standardise(mb["probe_advantage"], probe) if c.normalize_advantages else mb["probe_advantage"]
        pg, _ = ppo_clipped_policy_loss(logp, mb["logp"], adv, c.clip_eps, probe)
        vclip = c.value_clip_eps if c.value_clip_eps > 0 else None
        v_loss = clipped_value_loss(value, mb["probe_target"], mb["probe_value"], vclip, probe)
        model0_loss = prediction_error(predicted0, mb["obs"], mb["next_obs"])
        ent = masked_mean(entropy, probe)
        total = pg + c.vf_coef * v_loss - c.ent_coef * ent + c.prediction_coef * model0_loss
        return total, {"probe_policy_loss": pg, "probe_value_loss": v_loss, "model0_loss": model0_loss}
