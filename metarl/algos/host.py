"""Host-stepped training and evaluation, for a family whose physics cannot run inside JAX
(`host_stepped = True`: Box2D LunarLander, `metarl.envs.lunarlander`).

Training (DQN, every context mode): each seed's `num_envs` streams are Gymnasium environments the
host steps; the jitted parts stay jitted: one call per environment step acts for every seed and
stream at once (DQN's `explore_step`, vmapped, the agent's carry on the device), and one call per
update writes the update's transitions into each seed's replay buffer and takes the gradient
steps (DQN's `learn`, vmapped over seeds). `HostChunk` has `run_chunk`'s interface, so
`metarl.run.train` runs it with the run folder, metrics, TensorBoard and atomic checkpoints of the
train state. A stream runs one episode per context, drawn uniformly from the family's training
contexts with the host's generator (seeded from the run's seed). A resumed run continues from the
checkpoint's train state but starts fresh episodes (the Box2D worlds are not checkpointed), so
it is not bit-identical to an uninterrupted run, unlike the jitted families.

Evaluation (`evaluate`): any per-context agent (`act`) on `episodes` greedy episodes of each of a
batch of contexts, one Gymnasium environment per context, all stepped together, one jitted `act`
per step for the whole batch: returns [tasks, episodes].
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metarl.envs.trial import TimeStep
from metarl.errors import ConfigError


@functools.partial(jax.jit, static_argnums=0)
def _sample(env, key):
    """A fresh context of the family (its own `sample_task`) and its context vector."""
    task = env.sample_task(key)
    return task, env.context(task)


def _row(tasks, j):
    return jax.tree.map(lambda x: np.asarray(x)[j], tasks)


class _Streams:
    """The host side of `rows` x `cols` Gymnasium environments, each on its own context, with what
    their agents see (numpy [rows, cols, ...]). Training (`tasks` None): every episode a context
    uniformly from the family's training contexts (a fresh one from `sample_task` when it has none,
    `contexts=0`); evaluation: column j always runs task j of `tasks`. Every
    episode is its own trial (a per-context stream), so `done` and `episode_index` stay 0."""

    def __init__(self, env, rows: int, cols: int, rng: np.random.Generator, tasks: Any = None):
        self.env, self.rows, self.cols, self.rng, self.tasks = env, rows, cols, rng, tasks
        self.gyms = [[env.make_gym() for _ in range(cols)] for _ in range(rows)]
        shape = (rows, cols)
        self.obs = np.zeros(shape + env.obs_shape, np.float32)
        self.outcome = np.zeros(shape + env.obs_shape, np.float32)
        self.prev_action = np.zeros(shape, np.int32)
        self.prev_reward = np.zeros(shape, np.float32)
        self.first = np.ones(shape, bool)
        self.steps = np.zeros(shape, np.int32)
        self.context = np.zeros(shape + (env.context_size,), np.float32)
        self.episode_return = np.zeros(shape, np.float64)
        self.pool = env.training_tasks() if tasks is None and env.contexts else tasks
        self.pool_context = None if self.pool is None else np.asarray(jax.vmap(env.context)(self.pool))
        for i in range(rows):
            for j in range(cols):
                self._start(i, j, seed=int(rng.integers(0, 2**31 - 1)))

    def _start(self, i: int, j: int, seed: int | None = None) -> None:
        if self.pool is None:
            task, context = jax.device_get(_sample(self.env, jax.random.PRNGKey(int(self.rng.integers(0, 2**31 - 1)))))
        else:
            k = j if self.tasks is not None else int(self.rng.integers(0, len(self.pool_context)))
            task, context = _row(self.pool, k), self.pool_context[k]
        self.env.set_context(self.gyms[i][j], task)
        obs, _ = self.gyms[i][j].reset(seed=seed)
        self.obs[i, j] = self.outcome[i, j] = obs
        self.prev_action[i, j], self.prev_reward[i, j] = 0, 0.0
        self.first[i, j], self.steps[i, j] = True, 0
        self.context[i, j] = context
        self.episode_return[i, j] = 0.0

    def timestep(self, explicit: bool) -> TimeStep:
        shape = (self.rows, self.cols)
        return TimeStep(
            obs=self.obs, prev_action=self.prev_action, prev_reward=self.prev_reward, done=np.zeros(shape, bool),
            episode_index=np.zeros(shape, np.int32), step_index=self.steps, first=self.first, outcome_obs=self.outcome,
            context=self.context if explicit else np.zeros(shape + (0,), np.float32),
        )

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        """Step every (active) environment; an ended episode starts the next (a new context when
        training). -> (obs before, reward, terminated, outcome obs, episode ended, its return)."""
        before = self.obs.copy()
        reward = np.zeros((self.rows, self.cols), np.float32)
        terminated = np.zeros((self.rows, self.cols), bool)
        ended = np.zeros((self.rows, self.cols), bool)
        finished_return = np.zeros((self.rows, self.cols), np.float64)
        for i in range(self.rows):
            for j in range(self.cols):
                if active is not None and not active[i, j]:
                    continue
                obs, r, term, _, _ = self.gyms[i][j].step(int(actions[i, j]))
                self.steps[i, j] += 1
                trunc = self.steps[i, j] >= self.env.max_steps
                reward[i, j], terminated[i, j] = r, term
                self.episode_return[i, j] += r
                self.outcome[i, j] = obs
                if term or trunc:
                    ended[i, j], finished_return[i, j] = True, self.episode_return[i, j]
                    outcome = np.asarray(obs, np.float32)
                    self._start(i, j)
                    self.outcome[i, j] = outcome  # what the action led to (a truncation bootstraps from it)
                else:
                    self.obs[i, j] = obs
                    self.prev_action[i, j], self.prev_reward[i, j] = int(actions[i, j]), r
                    self.first[i, j] = False
        return before, reward, terminated, self.outcome.copy(), ended, finished_return

    def close(self) -> None:
        for row in self.gyms:
            for g in row:
                g.close()


@functools.partial(jax.jit, static_argnums=0)
def _act(algo, params, update_step, key, t, carry, timestep):
    """Every seed's behaviour-policy action on every stream (DQN's `explore_step`)."""
    n = algo.config.num_envs

    def per_seed(params, update_step, key, carry, timestep):
        eps = algo.update_epsilon(update_step)
        key_rollout = jax.random.split(key, 1 + algo.update_keys)[2]  # the update's rollout key
        keys = jax.random.split(jax.random.fold_in(key_rollout, t), n)
        return jax.vmap(algo.explore_step(params, eps))(carry, timestep, keys)

    return jax.vmap(per_seed, in_axes=(0, 0, 0, 0, 0))(params, update_step, key, carry, timestep)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _learn(algo, state, batch, last_return, episodes_ended):
    """Every seed's update from its transitions `batch` {field: [seeds, train_every, num_envs, ...]}."""

    def per_seed(ts, batch, last_return, ended):
        key, *keys = jax.random.split(ts.key, 1 + algo.update_keys)  # as `Algorithm.update` splits them
        _, _, key_sample, key_probe = keys
        flat = jax.tree.map(lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), batch)  # step-major, as `collect`'s
        new, metrics = algo.learn(ts, flat, key_sample, key_probe)
        metrics = {**metrics, "epsilon": algo.update_epsilon(ts.update_step),
                   "episode_return": last_return, "episodes_ended": ended}
        new = new.replace(key=key, update_step=ts.update_step + 1)
        return new, {k: jnp.mean(jnp.asarray(v)).astype(jnp.float32) for k, v in metrics.items()}

    return jax.vmap(per_seed)(state, batch, last_return, episodes_ended)


class HostChunk:
    """`metarl.run.loop.run_chunk`'s interface for DQN on a host-stepped family: `chunk(state, n)`
    -> (state, {metric: [seeds] sums over the n updates}, first_bad [seeds]). It keeps the
    Gymnasium environments between chunks."""

    def __init__(self, algo, seeds: int, seed: int):
        if algo.name != "dqn":
            raise ConfigError(f"{algo.env.name} is stepped from the host (Box2D): only dqn trains on it, not {algo.name}")
        self.algo, self.seeds = algo, seeds
        self.rng = np.random.default_rng([int(seed), 0x4C4C])
        self.streams = _Streams(algo.env, seeds, algo.config.num_envs, self.rng)
        self.last_return = np.zeros((seeds, algo.config.num_envs), np.float32)
        self.explicit = algo.config.context_mode == "explicit"

    def metric_names(self, state) -> tuple[list[str], list[str]]:
        c = self.algo.config
        example = self._batch_shape(state)
        _, shape = jax.eval_shape(functools.partial(_learn, self.algo), state, example, jnp.zeros((self.seeds, c.num_envs)),
                                  jnp.zeros((self.seeds,)))
        names = sorted(shape)
        return names, [k for k in names if "loss" in k] or names

    def _batch_shape(self, state):
        c = self.algo.config
        ts = self.streams.timestep(self.explicit)
        out = jax.eval_shape(functools.partial(_act, self.algo), state.params, state.update_step, state.key, 0, state.agent_carry, ts)[2]
        n, obs = c.num_envs, self.algo.env.obs_shape
        lead = (self.seeds, c.train_every, n)
        fields = {"obs": jax.ShapeDtypeStruct(lead + obs, jnp.float32), "action": jax.ShapeDtypeStruct(lead, jnp.int32),
                  "reward": jax.ShapeDtypeStruct(lead, jnp.float32), "next_obs": jax.ShapeDtypeStruct(lead + obs, jnp.float32),
                  "terminated": jax.ShapeDtypeStruct(lead, jnp.bool_)}
        fields.update({k: jax.ShapeDtypeStruct((self.seeds, c.train_every) + v.shape[1:], v.dtype) for k, v in out.items()})
        return fields

    def __call__(self, state, num_updates):
        algo, c = self.algo, self.algo.config
        sums: dict[str, np.ndarray] = {}
        first_bad = np.full((self.seeds,), -1, np.int32)
        carry = state.agent_carry
        for u in range(int(num_updates)):
            records = []
            ended_count = np.zeros((self.seeds,), np.float32)
            for t in range(c.train_every):
                ts = self.streams.timestep(self.explicit)
                action, carry, out = _act(algo, state.params, state.update_step, state.key, t, carry, ts)
                action = np.asarray(action)
                obs, reward, terminated, outcome, ended, finished = self.streams.step(action)
                self.last_return = np.where(ended, finished, self.last_return).astype(np.float32)
                ended_count += ended.sum(axis=1)
                records.append(algo.replay_record(obs, jax.device_get(out), action, reward, outcome, terminated))
            batch = {k: np.stack([r[k] for r in records], axis=1) for k in records[0]}  # [seeds, T, N, ...]
            state = state.replace(agent_carry=carry)
            state, metrics = _learn(algo, state, batch, self.last_return, ended_count)
            carry = state.agent_carry
            metrics = jax.device_get(metrics)
            for k, v in metrics.items():
                v = np.asarray(v, np.float32)
                sums[k] = sums.get(k, 0.0) + v
                bad = ~np.isfinite(v) & (first_bad < 0) & ("loss" in k)
                first_bad = np.where(bad, u, first_bad)
        finite = np.asarray(_finite_params(state.params))  # as run_chunk checks them (here once per chunk)
        first_bad = np.where(~finite & (first_bad < 0), int(num_updates) - 1, first_bad)
        return state, {k: jnp.asarray(v) for k, v in sums.items()}, jnp.asarray(first_bad)


@jax.jit
def _finite_params(params):
    leaves = [x.reshape(x.shape[0], -1) for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x), axis=1) for x in leaves]), axis=0)


def evaluate(agent, params, env, tasks, episodes: int, key: jax.Array, seed: int = 0) -> np.ndarray:
    """`agent` on `episodes` greedy episodes of each task (context) in `tasks` (stacked) of a
    host-stepped family: numpy [tasks, episodes] returns."""
    n = env.check_tasks(tasks)
    rng = np.random.default_rng([int(seed), int(jax.random.randint(key, (), 0, 2**31 - 1))])
    streams = _Streams(env, 1, n, rng, tasks=tasks)
    explicit = bool(getattr(agent, "reads_context", False))
    act = jax.jit(jax.vmap(agent.act, in_axes=(None, 0, 0, 0)))
    carry = jax.vmap(agent.init)(jax.random.split(key, n))
    returns = np.zeros((n, episodes), np.float64)
    done_episodes = np.zeros((n,), np.int32)
    t = 0
    try:
        while (done_episodes < episodes).any():
            ts = jax.tree.map(lambda x: x[0], streams.timestep(explicit))
            action, carry = act(params, carry, ts, jax.random.split(jax.random.fold_in(key, t), n))
            t += 1
            active = (done_episodes < episodes)[None]
            _, _, _, _, ended, finished = streams.step(np.asarray(action)[None], active)
            for j in np.flatnonzero(ended[0]):
                returns[j, done_episodes[j]] = finished[0, j]
                done_episodes[j] += 1
    finally:
        streams.close()
    return returns.astype(np.float32)
