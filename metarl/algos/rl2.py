"""RL² (Duan et al. 2016) trained by recurrent PPO.

One recurrent policy reads [observation, previous action, previous reward, done flag] through a
whole trial of n episodes of one task; its memory is reset only when a new trial (task) starts, so
it can learn to explore in early episodes and exploit in later ones. The trial is the RL² episode:
PPO's returns and GAE run over the whole trial and only its end is terminal (see `metarl.ops.gae`).

One `update` = rollout of `trials_per_update` whole trials on freshly sampled tasks (a `lax.scan`
over the trial's steps, vmapped over trials), GAE, then `epochs` passes of `minibatches` PPO
minibatches (of whole trials, recomputing the recurrent states from the trial start) — all one
jittable, vmappable (over seeds) function.

Data parallelism (speed only, opt-in): `devices=N` splits every rollout and every PPO minibatch's
trials over N JAX devices (`shard_map`; gradients and statistics averaged with `pmean`), the same
computation as one device up to the order of floating-point sums. On a CPU, make N host devices
with `metarl.use_host_devices(N)` before the first JAX computation (see `metarl.devices`), e.g.
`metarl --host-devices 2 train rl2 bandit ... --devices 2`.

Defaults reproduce the PyTorch re-implementation's run (docs: rl2_tables.md): GRU 256 with
LayerNorm, separate policy and value networks, clip 0.1, entropy 0.01, gamma 0.99, GAE lambda 0.3,
8 epochs, AdamW lr 2e-4 (eps 1e-5) weight decay 0.01 on weight matrices only, no advantage
standardisation, minibatches of 60 trials, 240,000 steps per update.

Known differences from that code: its GRU layer-normalises the reset and update gates' projections
jointly (2H units) and uses a ReLU candidate; ours normalises each gate separately and uses tanh
(the standard GRU), with the same +1 "remember" bias on the update gate at initialisation. It ran 8
MPI processes that each collected 1/8 of the 240,000 steps and averaged gradients, so each of its
optimiser steps saw 8 process-minibatches of 60 trials; ours sees one minibatch of
`minibatch_trials` (raise it to 480 for the same effective minibatch).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from metarl.agents import Agent
from metarl.algos.base import InContextAlgorithm, check_ppo_settings, TrainState, adamw, agent_from_config, register, sample_or_greedy
from metarl.envs.trial import TimeStep
from metarl.errors import ConfigError, check, check_float, check_int
from metarl.rollout import rollout
from metarl.nets.recurrent import RL2ActorCritic, initial_carry, step
from metarl.ops.gae import generalized_advantage_estimation, trial_discounts
from metarl.ops.ppo import clipped_value_loss, entropy_from_logits, ppo_clipped_policy_loss, standardise

CORES = ("gru", "lstm")

#: The mesh axis that `RL2Config.devices` > 1 splits trials over.
BATCH_AXIS = "trials"


@dataclasses.dataclass(frozen=True)
class RL2Config:
    """RL² + PPO settings. The fields' defaults are the reference run (rl2_tables.md); `metarl train`
    starts from the preset it names instead."""

    core: str = "gru"  #: recurrent core, "gru" or "lstm"
    hidden: int = 256  #: units of each recurrent core
    layer_norm: bool = True  #: LayerNorm on the gates' input and recurrent projections
    shared: bool = False  #: one core for policy and value (False: two separate networks)
    episode_index_input: bool = False  #: add the episode index / n to the input
    steps_per_update: int = 240_000  #: env steps per update; trials = steps / trial length
    trials_per_update: int | None = None  #: trials per update (overrides steps_per_update)
    minibatch_trials: int = 60  #: trials per PPO minibatch
    minibatches: int | None = None  #: minibatches per epoch (overrides minibatch_trials)
    epochs: int = 8  #: PPO passes over each update's data
    lr: float = 2e-4  #: AdamW learning rate
    lr_decay_updates: int = 0  #: decay the learning rate linearly to 0 over this many updates (0: constant)
    weight_decay: float = 0.01  #: AdamW decoupled weight decay
    adam_eps: float = 1e-5  #: AdamW epsilon
    max_grad_norm: float = 0.0  #: clip gradients to this global norm (0: no clipping)
    gamma: float = 0.99  #: discount over the whole trial
    gae_lambda: float = 0.3  #: GAE lambda
    clip_eps: float = 0.1  #: PPO ratio clip range
    value_clip_eps: float = 0.0  #: PPO value clip range (0: unclipped value loss)
    ent_coef: float = 0.01  #: entropy bonus coefficient
    vf_coef: float = 1.0  #: value loss coefficient
    normalize_advantages: bool = False  #: standardise advantages within each minibatch
    devices: int = 1  #: split every rollout and PPO minibatch over this many devices (speed only)
    #: optimise only the rewards of episodes with this index or later (E-RL² on two-phase trials: 1,
    #: the exploration episode's rewards read by the policy but not counted); 0: every episode's
    counted_from_episode: int = 0

    def __post_init__(self):
        o = "rl2"
        check(self.core in CORES, f"{o}: core must be one of {', '.join(CORES)}, got {self.core!r}")
        check_int(o, "hidden", self.hidden, low=1, high=65536)
        for name in ("layer_norm", "shared", "episode_index_input", "normalize_advantages"):
            check(isinstance(getattr(self, name), bool), f"{o}: {name} must be true or false, got {getattr(self, name)!r}")
        check_int(o, "steps_per_update", self.steps_per_update, low=1)
        if self.trials_per_update is not None:
            check_int(o, "trials_per_update", self.trials_per_update, low=1)
        check_int(o, "minibatch_trials", self.minibatch_trials, low=1)
        if self.minibatches is not None:
            check_int(o, "minibatches", self.minibatches, low=1)
        check_int(o, "epochs", self.epochs, low=1)
        check_ppo_settings(o, self)
        check_float(o, "weight_decay", self.weight_decay, low=0.0)
        check_int(o, "devices", self.devices, low=1)
        check_int(o, "counted_from_episode", self.counted_from_episode, low=0)


#: Named configurations. "reference": the PyTorch re-implementation's run. "fast": what trains
#: quickest on a small CPU: one shared GRU 128, 12,000 steps per update, 4 epochs of 100-trial
#: minibatches, lr 3e-3, undiscounted, GAE lambda 0.9, standardised advantages. On bandit n=10,
#: k=5 it passed a mean total return of 6.5 (1,000 test tasks) after 50 updates (600,000 steps,
#: about 110 s of training including compilation on a 2-core CPU shared with other jobs).
PRESETS: dict[str, RL2Config] = {
    "reference": RL2Config(),
    "fast": RL2Config(
        hidden=128,
        shared=True,
        steps_per_update=12_000,
        minibatch_trials=100,
        epochs=4,
        lr=3e-3,
        gamma=1.0,
        gae_lambda=0.9,
        normalize_advantages=True,
    ),
}
# "fast" adapted to long trials (about 100 steps: bandits with n=100, tabular MDPs): minibatches of 20
# trials (6 per update instead of 1), lr 1e-3, and the re-implementation's gamma 0.99 and GAE lambda
# 0.3. On bandit n=100, k=5 (one seed, 1.8M steps) it reached 72.5 where "fast" with 20-trial
# minibatches and lr 1e-3 reached 58 (see docs/rl2.md).
PRESETS["fast-long"] = dataclasses.replace(PRESETS["fast"], minibatch_trials=20, lr=1e-3, gamma=0.99, gae_lambda=0.3)
# "fast-long" with a GRU of 256 units (the reference's width, still one shared core): in single-seed
# probes on bandit n=100, k=5 (benchmarks/results/rl2_bandit_probe.md) it reached 76.5 after 2M steps
# where "fast-long" reached 72.7 (about 3.5x the compute per step).
PRESETS["fast-long-256"] = dataclasses.replace(PRESETS["fast-long"], hidden=256)
# "fast-long-256" with 8 PPO epochs per update (twice the reuse of each sample): in the same probes
# it learned faster early (72.3 vs 67.6 after 240,000 steps, 74.2 vs 72.2 after 960,000) and ended
# level (76.4 vs 76.5 after 2M), at about 1.5x the compute per step.
PRESETS["fast-long-256-e8"] = dataclasses.replace(PRESETS["fast-long-256"], epochs=8)


@struct.dataclass
class RL2TrainState(TrainState):
    """params: the network's; opt_state: AdamW's; key; update_step (see `algos.base.TrainState`)."""


@dataclasses.dataclass(frozen=True)
class RL2Agent(Agent):
    """The trained RL² policy as an in-context agent: carry = the recurrent state
    ([num_cores, H], or a (c, h) pair), params = the network's parameters."""

    name = "rl2"

    core: str = "gru"
    hidden: int = 256
    layer_norm: bool = True
    shared: bool = False
    episode_index_input: bool = False
    greedy: bool = False  #: act by the most likely action instead of sampling

    @property
    def network(self) -> RL2ActorCritic:
        return RL2ActorCritic(
            num_actions=self.env.num_actions,
            core=self.core,
            hidden=self.hidden,
            layer_norm=self.layer_norm,
            shared=self.shared,
            episodes=self.episodes if self.episode_index_input else 0,
        )

    def init(self, key: jax.Array) -> Any:
        net = self.network
        return initial_carry(self.core, self.hidden, net.num_cores)

    def act(self, params: Any, carry: Any, timestep: TimeStep, key: jax.Array) -> tuple[jax.Array, Any]:
        carry_b = jax.tree.map(lambda x: x[:, None], carry)  # add the batch axis after the core axis
        carry_b, logits, _ = step(self.network, params, carry_b, jax.tree.map(lambda x: x[None], timestep))
        return sample_or_greedy(key, logits[0], self.greedy), jax.tree.map(lambda x: x[:, 0], carry_b)


@register
@dataclasses.dataclass(frozen=True)
class RL2(InContextAlgorithm):
    """RL² by recurrent PPO. `RL2(env, episodes, RL2Config(...))` or `make("rl2", env, n, ...)`."""

    name = "rl2"
    Config = RL2Config
    presets: ClassVar[dict[str, RL2Config]] = PRESETS  #: named configs ("reference", "fast")
    State = RL2TrainState
    init_keys = 2  #: network parameters; the trial reset giving the input's shapes
    update_keys = 2  #: rollout; PPO epochs' permutations

    config: RL2Config = RL2Config()

    #: trials of at most this many steps train best with "fast", longer ones with "fast-long"
    SHORT_TRIAL_STEPS: ClassVar[int] = 30

    @classmethod
    def default_preset(cls, env, episodes=None):
        steps = (episodes or 1) * env.max_steps_in_episode
        if steps <= cls.SHORT_TRIAL_STEPS:
            return "fast", f"trials of {steps} steps (<= {cls.SHORT_TRIAL_STEPS}): bandit n=10 reached 6.5 in 600,000 steps"
        return "fast-long", f"trials of {steps} steps (> {cls.SHORT_TRIAL_STEPS}): bandit n=100 reached 72.5 in 1.8M steps"

    def __post_init__(self):
        super().__post_init__()
        if self.config.counted_from_episode >= self.episodes:
            raise ConfigError(f"{self.name}: counted_from_episode ({self.config.counted_from_episode}) must be below the trial's "
                              f"episodes ({self.episodes}), or nothing is optimised", "counted_from_episode")
        if not self.env.discrete:
            raise ConfigError(f"rl2: needs a family with discrete actions; {self.env.name} has {type(self.env.action_space()).__name__} actions")
        if self.trials_per_update % self.num_minibatches:
            raise ConfigError(
                f"rl2: trials_per_update ({self.trials_per_update}) must be a multiple of the number of "
                f"minibatches ({self.num_minibatches}); change trials_per_update/steps_per_update or "
                f"minibatches/minibatch_trials"
            )
        if self.minibatch_size % self.config.devices:
            raise ConfigError(
                f"rl2: the minibatch of {self.minibatch_size} trials must split evenly over devices="
                f"{self.config.devices}; change minibatch_trials/minibatches or devices"
            )

    # --- derived sizes ------------------------------------------------------------------------
    @property
    def trials_per_update(self) -> int:
        c = self.config
        if c.trials_per_update is not None:
            return c.trials_per_update
        trials = max(1, round(c.steps_per_update / self.trial_steps))
        if c.minibatches is None and trials % max(1, trials // c.minibatch_trials):
            # derived from steps_per_update and not a whole number of minibatches: round to the
            # nearest multiple of minibatch_trials
            trials = max(1, round(trials / c.minibatch_trials)) * c.minibatch_trials
        return trials

    @property
    def num_minibatches(self) -> int:
        c = self.config
        if c.minibatches is not None:
            return c.minibatches
        return max(1, self.trials_per_update // c.minibatch_trials)

    @property
    def minibatch_size(self) -> int:
        return self.trials_per_update // self.num_minibatches

    @property
    def steps_per_update(self) -> int:
        return self.trials_per_update * self.trial_steps

    @property
    def network(self) -> RL2ActorCritic:
        return self.agent().network

    def optimizer(self) -> optax.GradientTransformation:
        c = self.config
        # Like the reference, decay weight matrices only (not biases, LayerNorm gains and shifts).
        decay_mask = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
            lambda path, _: getattr(path[-1], "key", None) in ("w_x", "w_h", "kernel"), params
        )
        lr = c.lr
        if c.lr_decay_updates:  # counted in optimiser steps: epochs x minibatches per update
            lr = optax.linear_schedule(c.lr, 0.0, c.lr_decay_updates * c.epochs * self.num_minibatches)
        return adamw(lr, eps=c.adam_eps, weight_decay=c.weight_decay, mask=decay_mask, clip_norm=c.max_grad_norm)

    def mesh(self) -> Mesh | None:
        """The 1-D device mesh (axis `BATCH_AXIS`) that `config.devices` > 1 splits trials over;
        None for one device. Raises `ConfigError` if JAX has fewer devices."""
        wanted = self.config.devices
        if wanted == 1:
            return None
        devices = jax.devices()
        if len(devices) < wanted:
            raise ConfigError(
                f"rl2: devices={wanted} but JAX has {len(devices)} {devices[0].platform} device(s); on a CPU "
                f"call metarl.use_host_devices({wanted}) before the first JAX computation (on the command line: "
                f"metarl --host-devices {wanted} train ...), or use devices=1"
            )
        return jax.make_mesh((wanted,), (BATCH_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:wanted])

    # --- the interface ------------------------------------------------------------------------
    def agent(self) -> RL2Agent:
        return agent_from_config(RL2Agent, self.env, self.episodes, self.config)

    def init_params(self, key_params: jax.Array, key_reset: jax.Array) -> Any:
        net = self.network
        timestep, _ = self.trial.reset(key_reset)
        carry = net.initial_carry((1,))
        return net.init(key_params, carry, jax.tree.map(lambda x: x[None, None], timestep))

    def rollout(self, params: Any, key: jax.Array) -> dict[str, Any]:
        """`trials_per_update` whole trials on fresh tasks. Returns time-major [T, B] arrays:
        timestep (what the agent saw), action, logp, value, reward, valid, trial_done.

        With `config.devices` > 1 the trials are split over the devices (XLA partitions the scan;
        the random numbers are the same as on one device, as JAX's default threefry PRNG is
        partitionable)."""
        net, trial, B = self.network, self.trial, self.trials_per_update
        key_reset, key_steps = jax.random.split(key)
        timestep, state = jax.vmap(trial.reset)(jax.random.split(key_reset, B))
        mesh = self.mesh()
        if mesh is not None:  # lay out the per-trial state [B, ...] split over the devices
            by_trial = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
            timestep, state = jax.lax.with_sharding_constraint((timestep, state), by_trial)

        def policy(carry, timestep, key_act, t):
            carry, logits, value = step(net, params, carry, timestep)
            action = jax.random.categorical(key_act, logits).astype(jnp.int32)
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
            return action, carry, {"logp": logp, "value": value}

        def record(s):
            return {
                "timestep": s.timestep,
                "action": s.action,
                "logp": s.out["logp"],
                "value": s.out["value"],
                "reward": s.reward,
                "valid": s.info["valid"],
                "trial_done": s.info["trial_done"],
            }

        carry = net.initial_carry((B,))
        if mesh is not None:  # [num_cores, B, H]
            carry = jax.lax.with_sharding_constraint(carry, NamedSharding(mesh, PartitionSpec(None, BATCH_AXIS)))
        keys = jax.random.split(key_steps, self.trial_steps)
        _, batch = rollout(trial, policy, carry, timestep, state, keys, batch=True, record=record)
        return batch

    def _loss(self, params: Any, mb: dict[str, Any], axis_name: str | None = None):
        """PPO loss of a minibatch (time-major [T, b] arrays) and its statistics: means over its
        trials. With `axis_name` (inside `shard_map`) `mb` is this device's part of the minibatch:
        the advantage standardisation then uses the whole minibatch's statistics, but the loss and
        statistics are this part's means (equal parts: their mean over devices is the whole's)."""
        c, net = self.config, self.network
        total_sum = (lambda v: jax.lax.psum(jnp.sum(v), axis_name)) if axis_name else jnp.sum  # noqa: E731
        carry = net.initial_carry((mb["action"].shape[1],))
        if axis_name:  # a per-device value inside shard_map, like the data it meets in the scan
            carry = jax.lax.pcast(carry, axis_name, to="varying")
        _, logits, values = net.apply(params, carry, mb["timestep"])  # [T, b, A], [T, b]
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, mb["action"][..., None], axis=-1)[..., 0]
        mask = mb["valid"].astype(jnp.float32)
        adv = mb["advantage"]
        if c.normalize_advantages:
            adv = standardise(adv, mask, total_sum)
        over_trials = lambda f, *xs: jax.vmap(f, in_axes=1)(*xs)  # noqa: E731  time-major -> per trial
        pg_loss, aux = over_trials(lambda lp, lo, a, m: ppo_clipped_policy_loss(lp, lo, a, c.clip_eps, m), logp, mb["logp"], adv, mask)
        vclip = c.value_clip_eps if c.value_clip_eps > 0 else None
        v_loss = over_trials(lambda v, t, vo, m: clipped_value_loss(v, t, vo, vclip, m), values, mb["target"], mb["value"], mask)
        entropy = over_trials(entropy_from_logits, logits, mask)
        pg_loss, v_loss, entropy = jnp.mean(pg_loss), jnp.mean(v_loss), jnp.mean(entropy)
        total = pg_loss + c.vf_coef * v_loss - c.ent_coef * entropy
        stats = {
            "policy_loss": pg_loss,
            "value_loss": v_loss,
            "entropy": entropy,
            "approx_kl": jnp.mean(aux["approx_kl"]),
            "clip_fraction": jnp.mean(aux["clip_fraction"]),
        }
        return total, stats

    def _loss_and_grad(self):
        """(params, minibatch) -> ((loss, stats), gradient). With `config.devices` > 1: data
        parallel, each device differentiates the loss of its b / devices trials and the gradients
        and statistics are averaged over the devices (the same maths as one device, up to the
        order of floating-point sums)."""
        mesh = self.mesh()
        if mesh is None:
            return jax.value_and_grad(self._loss, has_aux=True)
        local_grad = jax.value_and_grad(functools.partial(self._loss, axis_name=BATCH_AXIS), has_aux=True)

        def device_part(params, mb):
            # The parameters are replicated; mark them per-device so that the gradient is this
            # device's own (no implicit sum over devices), then average explicitly.
            params = jax.lax.pcast(params, BATCH_AXIS, to="varying")
            return jax.lax.pmean(local_grad(params, mb), BATCH_AXIS)

        by_trial = PartitionSpec(None, BATCH_AXIS)  # time-major [T, b, ...]: split the trials
        return jax.shard_map(device_part, mesh=mesh, in_specs=(PartitionSpec(), by_trial), out_specs=PartitionSpec())

    def _update(self, train_state: RL2TrainState, key_rollout: jax.Array, key_epochs: jax.Array):
        c = self.config
        T, B, M, b = self.trial_steps, self.trials_per_update, self.num_minibatches, self.minibatch_size
        batch = self.rollout(train_state.params, key_rollout)

        # GAE over whole trials: the value after the last step is never used (discount 0 there).
        discount = trial_discounts(c.gamma, batch["trial_done"], batch["valid"])
        reward = jnp.where(batch["valid"], batch["reward"], 0.0)
        counted = jnp.where(batch["timestep"].episode_index >= c.counted_from_episode, reward, 0.0)  # what PPO optimises
        v_next = jnp.concatenate([batch["value"][1:], jnp.zeros_like(batch["value"][:1])], axis=0)
        gae = jax.vmap(generalized_advantage_estimation, in_axes=(1, 1, 1, 1, None), out_axes=1)
        advantage = gae(counted, discount, batch["value"], v_next, c.gae_lambda)
        data = {k: batch[k] for k in ("timestep", "action", "logp", "value", "valid")}
        data["advantage"] = advantage
        data["target"] = advantage + batch["value"]

        optimizer = self.optimizer()
        grad_fn = self._loss_and_grad()

        def minibatch_step(carry, mb):
            params, opt_state = carry
            (_, stats), grads = grad_fn(params, mb)
            stats["grad_norm"] = optax.tree.norm(grads)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), stats

        def epoch(carry, key_epoch):
            perm = jax.random.permutation(key_epoch, B)
            # [T, B, ...] -> [M, T, b, ...]: minibatches of whole trials, still time-major.
            mbs = jax.tree.map(lambda x: jnp.swapaxes(jnp.take(x, perm, axis=1).reshape((T, M, b) + x.shape[2:]), 0, 1), data)
            return jax.lax.scan(minibatch_step, carry, mbs)

        (params, opt_state), stats = jax.lax.scan(
            epoch, (train_state.params, train_state.opt_state), jax.random.split(key_epochs, c.epochs)
        )
        metrics = dict(stats)
        metrics["trial_return"] = jnp.sum(reward, axis=0)
        if c.counted_from_episode:
            metrics["counted_return"] = jnp.sum(counted, axis=0)
        return train_state.replace(params=params, opt_state=opt_state), metrics
