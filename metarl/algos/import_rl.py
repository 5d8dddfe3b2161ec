"""IMPORT (Kamienny, Pirotta, Lazaric, Lavril, Usunier, Denoyer 2020: *Learning Adaptive Exploration
Strategies in Dynamic Environments Through Informed Policy Regularization*), as DREAM's paper runs
it as a baseline, on the two-phase trials of `metarl.envs.dream_grid`.

One recurrent policy acts through the whole trial (exploration and exploitation episodes, as
RL²): a GRU over [observation, previous action, previous reward, episode-done flag] gives h_t and
its recurrent task embedding e_t = W h_t. The actor-critic head reads the observation and a task
embedding z: in a fraction `id_fraction` (1/2) of the training trials z = f(task id) (a learned
table, the "informed" policy), in the others, and always at test, z = e_t. Both are trained by
the same PPO loss on the trial's exploitation rewards (E-RL²'s objective: the exploration
episode's rewards are not optimised), plus `distance_coef` x ||e_t - stop_gradient(f(id))||^2 at
every step (the reference's `embedding_distance`), which pulls the recurrent embedding toward the
task's. Learner: PPO (the reference: recurrent double DQN; see docs/dream.md).

The agent (`ImportAgent`) never reads the task at test time: z is its recurrent embedding.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from metarl.agents import Agent
from metarl.algos.base import InContextAlgorithm, TrainState, adamw, agent_from_config, minibatch_epochs, register, sampled_actions
from metarl.envs.dream_grid import one_hot_observation
from metarl.envs.trial import TimeStep
from metarl.nets.init import orthogonal  # not Flax's: its batched QR deadlocks under vmap (metarl.nets.init)
from metarl.errors import ConfigError, check_float, check_int
from metarl.ops.gae import generalized_advantage_estimation, trial_discounts
from metarl.ops.ppo import clipped_value_loss, entropy_from_logits, masked_mean, ppo_clipped_policy_loss, standardise
from metarl.rollout import rollout


@dataclasses.dataclass(frozen=True)
class TrialPPOConfig:
    """The PPO settings of `TrialPPO` (IMPORT's and VariBAD's configs extend it)."""

    owner: ClassVar[str] = "trial-ppo"
    positive_ints: ClassVar[tuple[str, ...]] = ()  #: the subclass's fields that must be >= 1
    weights: ClassVar[tuple[str, ...]] = ()  #: the subclass's fields that must be >= 0
    fractions: ClassVar[tuple[str, ...]] = ()  #: the subclass's fields in [0, 1]
    widths: ClassVar[tuple[str, ...]] = ()  #: the subclass's hidden-width tuples

    trials_per_update: int = 128  #: whole trials per update
    epochs: int = 4  #: passes over the update's trials
    minibatches: int = 8  #: gradient steps per pass (trials_per_update must divide by it)
    lr: float = 1e-3  #: Adam learning rate
    max_grad_norm: float = 1.0  #: clip gradients to this global norm (0: no clipping)
    gamma: float = 0.99  #: discount over the whole trial
    gae_lambda: float = 0.95  #: GAE lambda
    clip_eps: float = 0.2  #: PPO ratio clip range
    ent_coef: float = 0.01  #: entropy bonus
    vf_coef: float = 0.5  #: value loss coefficient
    counted_from_episode: int = 1  #: rewards of episodes before this one are not optimised (1: E-RL²'s objective)
    one_hot_obs: bool = True  #: one-hot each grid observation entry (as the reference's embedding tables)

    def __post_init__(self):
        o = self.owner
        for name in ("trials_per_update", "epochs", "minibatches") + self.positive_ints:
            check_int(o, name, getattr(self, name), low=1, high=1_000_000)
        check_float(o, "lr", self.lr, low=0.0, low_open=True)
        if self.trials_per_update % self.minibatches:
            raise ConfigError(f"{o}: trials_per_update ({self.trials_per_update}) must be a multiple of minibatches ({self.minibatches})")
        for name in ("max_grad_norm", "ent_coef", "vf_coef") + self.weights:
            check_float(o, name, getattr(self, name), low=0.0)
        for name in ("gamma", "gae_lambda") + self.fractions:
            check_float(o, name, getattr(self, name), low=0.0, high=1.0)
        check_float(o, "clip_eps", self.clip_eps, low=0.0, low_open=True)
        check_int(o, "counted_from_episode", self.counted_from_episode, low=0)
        for name in self.widths:
            object.__setattr__(self, name, tuple(getattr(self, name)))
            for width in getattr(self, name):
                check_int(o, name, width, low=1, high=65536)


@dataclasses.dataclass(frozen=True)
class ImportConfig(TrialPPOConfig):
    """IMPORT settings (PPO learner)."""

    owner: ClassVar[str] = "import"
    positive_ints: ClassVar[tuple[str, ...]] = ("hidden", "embed_dim")
    weights: ClassVar[tuple[str, ...]] = ("distance_coef",)
    fractions: ClassVar[tuple[str, ...]] = ("id_fraction",)
    widths: ClassVar[tuple[str, ...]] = ("head_hidden",)

    hidden: int = 128  #: GRU units
    embed_dim: int = 32  #: size of z (the reference: 64)
    head_hidden: tuple[int, ...] = (128, 128)  #: the actor-critic head's hidden widths
    distance_coef: float = 1.0  #: weight of ||e_t - f(id)||^2
    id_fraction: float = 0.5  #: training trials whose head reads f(id) instead of e_t


PRESETS: dict[str, ImportConfig] = {"default": ImportConfig()}


class ImportNetwork(nn.Module):
    """f (the id table), the GRU with its embedding head e, and the actor-critic head on (s, z)."""

    num_actions: int
    num_ids: int
    hidden: int
    embed_dim: int
    head_hidden: tuple[int, ...]

    def setup(self):
        self.f = nn.Embed(self.num_ids, self.embed_dim)
        self.inp = nn.Dense(64)
        self.cell = nn.GRUCell(self.hidden, recurrent_kernel_init=orthogonal())
        self.e = nn.Dense(self.embed_dim)
        self.layers = [nn.Dense(w) for w in self.head_hidden]
        self.pi = nn.Dense(self.num_actions, kernel_init=orthogonal(0.01))
        self.v = nn.Dense(1)

    def id_embedding(self, task_id):
        return self.f(task_id)

    def recur(self, h, x):
        h, y = self.cell(h, nn.relu(self.inp(x)))
        return h, self.e(y)

    def head(self, obs, z):
        x = jnp.concatenate([obs, z], axis=-1)
        for layer in self.layers:
            x = nn.relu(layer(x))
        return self.pi(x), self.v(x)[..., 0]

    def __call__(self, obs, x):  # touches every part (init)
        h, e = self.recur(jnp.zeros(x.shape[:-1] + (self.hidden,)), x)
        return self.head(obs, e + self.id_embedding(jnp.zeros(x.shape[:-1], jnp.int32)))


@dataclasses.dataclass(frozen=True)
class ImportAgent(Agent):
    """IMPORT's policy as an agent: carry = the GRU state, and (training only) the id's z and
    whether to read it."""

    name = "import"

    hidden: int = 128
    embed_dim: int = 32
    head_hidden: tuple[int, ...] = (128, 128)
    one_hot_obs: bool = True
    greedy: bool = True

    @property
    def network(self) -> ImportNetwork:
        return ImportNetwork(self.env.num_actions, self.env.num_ids, self.hidden, self.embed_dim, tuple(self.head_hidden))

    def encode(self, obs):
        """The observation as the networks read it (`dream_grid.one_hot_observation`, unless `one_hot_obs` is off)."""
        return one_hot_observation(self.env, obs) if self.one_hot_obs else obs

    def inputs(self, timestep: TimeStep):
        """(the encoded observation, the GRU's input: it, the previous action, reward and done flag)."""
        obs = self.encode(timestep.obs)
        prev = jax.nn.one_hot(timestep.prev_action, self.env.num_actions) * (~timestep.first)
        return obs, jnp.concatenate([obs, prev, timestep.prev_reward[None], timestep.done.astype(jnp.float32)[None]])

    def init(self, key):
        return {"h": jnp.zeros((self.hidden,)), "z_id": jnp.zeros((self.embed_dim,)), "use_id": jnp.bool_(False)}

    def step(self, params, carry, timestep: TimeStep):
        """One step of one trial: (carry, logits, value, e_t)."""
        net = self.network
        h = jnp.where(timestep.first, jnp.zeros_like(carry["h"]), carry["h"])
        obs, x = self.inputs(timestep)
        h, e = net.apply(params, h, x, method=ImportNetwork.recur)
        z = jnp.where(carry["use_id"], carry["z_id"], e)
        logits, value = net.apply(params, obs, z, method=ImportNetwork.head)
        return {**carry, "h": h}, logits, value, e

    def act(self, params, carry, timestep, key):
        carry, logits, _, _ = self.step(params, carry, timestep)
        action = jnp.argmax(logits) if self.greedy else jax.random.categorical(key, logits)
        return action.astype(jnp.int32), carry


class TrialPPO(InContextAlgorithm):
    """PPO over whole trials for one recurrent policy whose agent has `step(params, carry, timestep)
    -> (carry, logits, value, aux)`; IMPORT and VariBAD are this with their own carry and auxiliary
    loss. One `update` = `trials_per_update` trials on fresh training tasks (the one rollout
    primitive), GAE over each trial as one RL² episode on the counted rewards (episodes >=
    `counted_from_episode`), then `epochs` passes of `minibatches` steps on PPO's loss plus
    `aux_loss`. Subclasses give `trial_inputs` (per-trial inputs drawn for the update: ids, coin
    flips), `initial_carry` and `aux_loss`; the config needs the PPO fields of `ImportConfig`."""

    update_keys = 2  #: the rollout; the trials' inputs and minibatch order

    def __post_init__(self):
        if not self.env.discrete:
            raise ConfigError(f"{self.name}: needs discrete actions; {self.env.name} has continuous ones")
        if self.config.counted_from_episode >= self.episodes:
            raise ConfigError(f"{self.name}: counted_from_episode ({self.config.counted_from_episode}) must be below the trial's "
                              f"episodes ({self.episodes}), or nothing is optimised", "counted_from_episode")
        super().__post_init__()

    @property
    def steps_per_update(self) -> int:
        return self.config.trials_per_update * self.trial_steps

    def optimizer(self):
        return adamw(self.config.lr, eps=1e-5, weight_decay=0.0, clip_norm=self.config.max_grad_norm)

    def init_extra(self, params, key_params):
        return {}

    def trial_inputs(self, tasks, key) -> dict:
        return {"task_id": tasks.task_id}

    def initial_carry(self, params, inputs) -> dict:
        raise NotImplementedError

    def aux_loss(self, params, data, aux) -> tuple[jax.Array, dict]:
        raise NotImplementedError

    def replay(self, params, batch, inputs):
        """Logits, values and the agent's aux output of one recorded trial [T, ...] under `params`."""
        agent = self.agent()

        def body(carry, timestep):
            carry, logits, value, aux = agent.step(params, carry, timestep)
            return carry, (logits, value, aux)

        _, out = jax.lax.scan(body, self.initial_carry(params, inputs), batch["timestep"])
        return out

    def _update(self, ts: TrainState, key_rollout, key_inputs):
        c, agent, trial = self.config, self.agent(greedy=False), self.trial
        B, T = c.trials_per_update, self.trial_steps
        key_tasks, key_reset, key_steps = jax.random.split(key_rollout, 3)
        tasks = self.env.sample_tasks(key_tasks, B)
        key_draw, key_shuffle = jax.random.split(key_inputs)
        inputs = self.trial_inputs(tasks, key_draw)
        params = ts.params
        timestep, state = jax.vmap(trial.reset)(jax.random.split(key_reset, B), tasks)
        carry = jax.vmap(self.initial_carry, in_axes=(None, 0))(params, inputs)
        step_all = jax.vmap(lambda cr, t: agent.step(params, cr, t))

        def policy(carry, timestep, key, t):
            carry, logits, value, _ = step_all(carry, timestep)
            action, logp = sampled_actions(logits, key)
            return action, carry, {"logp": logp, "value": value}

        def record(s):
            return {"timestep": s.timestep, "action": s.action, "logp": s.out["logp"], "value": s.out["value"], "reward": s.reward,
                    "valid": s.info["valid"], "trial_done": s.info["trial_done"], "next_obs": s.next_timestep.outcome_obs}

        _, batch = rollout(trial, policy, carry, timestep, state, jax.random.split(key_steps, T), batch=True, record=record)
        batch = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch)  # [B, T, ...]
        valid = batch["valid"]
        reward = jnp.where(valid, batch["reward"], 0.0)
        counted = jnp.where(batch["timestep"].episode_index >= c.counted_from_episode, reward, 0.0)
        discount = jax.vmap(trial_discounts, in_axes=(None, 0, 0))(c.gamma, batch["trial_done"], valid)
        v_next = jnp.concatenate([batch["value"][:, 1:], jnp.zeros((B, 1))], axis=1)
        advantage = jax.vmap(generalized_advantage_estimation, in_axes=(0, 0, 0, 0, None))(counted, discount, batch["value"], v_next, c.gae_lambda)
        mask = valid.astype(jnp.float32)
        data = {"batch": batch, "inputs": inputs, "adv": standardise(advantage, mask), "target": advantage + batch["value"], "mask": mask}
        replay = jax.vmap(self.replay, in_axes=(None, 0, 0))

        def loss_fn(p, d):
            logits, value, aux = replay(p, d["batch"], d["inputs"])
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits), d["batch"]["action"][..., None], axis=-1)[..., 0]
            m = d["mask"]
            pg, ppo_aux = ppo_clipped_policy_loss(logp, d["batch"]["logp"], d["adv"], c.clip_eps, m)
            v_loss = clipped_value_loss(value, d["target"], mask_t=m)
            entropy = entropy_from_logits(logits, m)
            extra, extra_stats = self.aux_loss(p, d, aux)
            total = pg + c.vf_coef * v_loss - c.ent_coef * entropy + extra
            return total, {"policy_loss": pg, "value_loss": v_loss, "entropy": entropy, "approx_kl": ppo_aux["approx_kl"], **extra_stats}

        params, opt_state, stats = minibatch_epochs(loss_fn, self.optimizer(), params, ts.opt_state, data, c.minibatches, c.epochs, key_shuffle)
        exploit = jnp.sum(jnp.where(batch["timestep"].episode_index >= 1, reward, 0.0), 1)
        return ts.replace(params=params, opt_state=opt_state), {**stats, **self.trial_metrics(exploit, inputs)}

    def trial_metrics(self, exploit, inputs) -> dict:
        """Metrics of the update's trials from their exploitation returns [B]."""
        return {"exploit_return": jnp.mean(exploit)}


@register
@dataclasses.dataclass(frozen=True)
class Import(TrialPPO):
    """IMPORT. `make("import", env, 1 + exploitation episodes, ...)` on a family whose tasks have
    ids (city, distraction, map, cooking)."""

    name = "import"
    Config = ImportConfig
    presets: ClassVar[dict[str, ImportConfig]] = PRESETS

    config: ImportConfig = ImportConfig()

    @classmethod
    def default_preset(cls, env, episodes=None):
        return "default", "IMPORT with a PPO learner"

    def __post_init__(self):
        if not hasattr(self.env, "num_ids"):
            raise ConfigError(f"import: needs a family whose tasks have ids (city, distraction, map, cooking); {self.env.name} has none")
        super().__post_init__()

    def agent(self, greedy: bool = True) -> ImportAgent:
        return agent_from_config(ImportAgent, self.env, self.episodes, self.config, greedy=greedy)

    def init_params(self, key_params):
        agent = self.agent()
        obs = agent.encode(jnp.zeros(self.env.obs_shape))
        x = jnp.zeros((obs.shape[0] + self.env.num_actions + 2,))
        return agent.network.init(key_params, obs, x)

    def trial_inputs(self, tasks, key):
        return {"task_id": tasks.task_id, "use_id": jax.random.uniform(key, tasks.task_id.shape) < self.config.id_fraction}

    def initial_carry(self, params, inputs):
        agent = self.agent()
        z_id = agent.network.apply(params, inputs["task_id"], method=ImportNetwork.id_embedding)
        return {**agent.init(None), "z_id": z_id, "use_id": inputs["use_id"]}

    def aux_loss(self, params, data, e):
        f = self.agent().network.apply(params, data["inputs"]["task_id"], method=ImportNetwork.id_embedding)
        distance = masked_mean(jnp.sum(jnp.square(e - jax.lax.stop_gradient(f)[:, None]), -1), data["mask"])
        return self.config.distance_coef * distance, {"embedding_distance": distance}

    def trial_metrics(self, exploit, inputs):
        recurrent = (~inputs["use_id"]).astype(jnp.float32)
        return {"exploit_return": jnp.mean(exploit),
                "exploit_return_recurrent": jnp.sum(exploit * recurrent) / jnp.maximum(recurrent.sum(), 1.0)}
