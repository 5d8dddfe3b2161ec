"""Exact optimal exploitation returns of DREAM's grid worlds, computed from the families' own `step`.

- `full_information(env, ids)`: the best expected return of one exploitation episode when the
  task id (the buses, the drawers) and the instruction are known: backward induction over the
  episode's `max_steps` steps on every state, the transitions and rewards tabulated by the family's
  jitted `step` (so the optimum follows the rules the agents train on, not a copy of them). The
  instruction is averaged over its distribution (a uniform corner; two draws of a drawer).
- `no_information(env, ids, prior)`: the best expected return of one exploitation episode by a
  policy that knows the instruction and that the id is one of `prior` (uniformly), but nothing
  else of this one, and learns only from what it observes during the episode (a bus ride's
  destination, the map cell): expectimax over the 20 steps on the belief (the set of ids consistent
  with the observations; the dynamics are deterministic), the policy's value then read per id.
  City-type families only (the cooking task's belief search is not tabulated).

The reference reports 0.8 (bus and map, id known), 0.3 (no information: walk to the corner) and
cooking 1 - 0.2 (d1 + d2) (0.467 in expectation on the test id); the tests check these.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from metarl.envs.dream_grid import CORNERS, EMPTY, INGREDIENTS, Cooking, GridFamily, GridState, GridTask
from metarl.errors import ConfigError

BOWL_CODES = 5**3


def num_states(env: GridFamily) -> int:
    """Size of the enumerated state space (the episode's step is the backward induction's stage)."""
    cells = env.size * env.size
    return cells * (INGREDIENTS + 1) * BOWL_CODES * 4 if isinstance(env, Cooking) else cells


def state_of(env: GridFamily, index, instruction) -> GridState:
    """The state numbered `index` (t = 0, exploiting) under `instruction`."""
    index = jnp.asarray(index, jnp.int32)
    if isinstance(env, Cooking):
        subgoal, rest = index % 4, index // 4
        code, rest = rest % BOWL_CODES, rest // BOWL_CODES
        inventory, cell = rest % (INGREDIENTS + 1), rest // (INGREDIENTS + 1)
        bowl = jnp.stack([code // 25, (code // 5) % 5, code % 5]).astype(jnp.int32)
    else:
        cell, inventory, bowl, subgoal = index, jnp.int32(EMPTY), jnp.full((3,), EMPTY, jnp.int32), jnp.int32(0)
    pos = jnp.stack([cell // env.size, cell % env.size]).astype(jnp.int32)
    return GridState(pos=pos, t=jnp.int32(0), exploring=jnp.bool_(False), instruction=jnp.asarray(instruction, jnp.int32),
                     inventory=jnp.asarray(inventory, jnp.int32), bowl=bowl, subgoal=jnp.asarray(subgoal, jnp.int32))


def index_of(env: GridFamily, state: GridState) -> jax.Array:
    cell = state.pos[0] * env.size + state.pos[1]
    if not isinstance(env, Cooking):
        return cell
    code = state.bowl[0] * 25 + state.bowl[1] * 5 + state.bowl[2]
    return ((cell * (INGREDIENTS + 1) + state.inventory) * BOWL_CODES + code) * 4 + state.subgoal


@functools.lru_cache(maxsize=None)
def _tabulate(env: GridFamily, with_obs: bool = True):
    """jit(ids [K], instruction [2]) -> (next state index, reward, terminated[, observation]) each
    [K, S, 9], every state and action of each id at the episode's first step (t = 0)."""
    states = jnp.arange(num_states(env))
    actions = jnp.arange(env.num_actions)

    def one(task_id, instruction, s, a):
        obs, after, reward, terminated, _, _ = env.step(jax.random.PRNGKey(0), state_of(env, s, instruction), a, GridTask(task_id))
        out = (index_of(env, after), reward, terminated)
        return out + (obs,) if with_obs else out

    over_actions = jax.vmap(one, in_axes=(None, None, None, 0))
    over_states = jax.vmap(over_actions, in_axes=(None, None, 0, None))
    over_ids = jax.vmap(over_states, in_axes=(0, None, None, None))
    return jax.jit(lambda ids, instruction: over_ids(ids, instruction, states, actions))


def tables(env: GridFamily, ids, instruction, with_obs: bool = True):
    out = _tabulate(env, with_obs)(jnp.asarray(ids, jnp.int32), jnp.asarray(instruction, jnp.int32))
    nxt, reward, terminated = np.asarray(out[0]), np.asarray(out[1], np.float64), np.asarray(out[2])
    return (nxt, reward, terminated, np.asarray(out[3])) if with_obs else (nxt, reward, terminated, None)


def _stage(env: GridFamily, reward, terminated, t: int):
    """The step's reward and termination at step t of the episode, from the t = 0 tables: only
    end_episode's cost (0.1 x the steps remaining) and the time limit depend on t."""
    from metarl.envs.dream_grid import END_EPISODE

    reward = reward + (np.arange(env.num_actions) == END_EPISODE) * 0.1 * t
    return reward, terminated | (t + 1 >= env.max_steps)


def instructions(env: GridFamily, task_id: int) -> list[tuple[np.ndarray, float]]:
    """The instructions of an exploitation episode on `task_id` with their probabilities."""
    if isinstance(env, Cooking):
        drawers = np.asarray(Cooking.drawer_contents(task_id))
        return [(np.array([drawers[i], drawers[j]]), 1 / 9) for i, j in itertools.product(range(3), range(3))]
    return [(np.asarray(c), 0.25) for c in CORNERS]


def start_index(env: GridFamily) -> int:
    return int(index_of(env, state_of(env, 0, np.zeros(2)).replace(pos=jnp.asarray(env.start_pos()),
                                                                 inventory=jnp.int32(EMPTY), bowl=jnp.full((3,), EMPTY, jnp.int32))))


def _check_ids(env: GridFamily, ids) -> np.ndarray:
    ids = np.asarray(ids, np.int64).reshape(-1)
    if ids.size == 0 or ids.min() < 0 or ids.max() >= env.num_ids:
        raise ConfigError(f"{env.name}: task ids must lie in [0, {env.num_ids}), got {ids.tolist()[:8]}")
    return ids


def full_information(env: GridFamily, ids) -> np.ndarray:
    """[len(ids)] the optimal expected exploitation return of each id, the id and instruction known."""
    ids = _check_ids(env, ids)
    start = start_index(env)
    # every instruction any of the ids can get, with each id's probability of it
    weights: dict = {}
    for k, task_id in enumerate(ids):
        for instruction, p in instructions(env, int(task_id)):
            row = weights.setdefault(tuple(int(v) for v in instruction), np.zeros(len(ids)))
            row[k] += p
    out = np.zeros(len(ids))
    for instruction, p in weights.items():
        members = np.flatnonzero(p > 0)  # backward induction for all of them at once
        nxt, reward, terminated, _ = tables(env, ids[members], np.array(instruction), with_obs=False)
        value = np.zeros(nxt.shape[:2])  # [K, S]
        for t in reversed(range(env.max_steps)):
            r, term = _stage(env, reward, terminated, t)
            following = np.take_along_axis(value, nxt.reshape(len(members), -1), axis=1).reshape(nxt.shape)
            value = np.max(r + np.where(term, 0.0, following), axis=-1)
        out[members] += p[members] * value[:, start]
    return out


def no_information(env: GridFamily, ids, prior=None) -> np.ndarray:
    """[len(ids)] the exploitation return, on each id, of the Bayes-optimal policy for a uniform
    prior over `prior` (default: all the family's ids) that knows the instruction and nothing of
    the id; the instruction averaged over its distribution."""
    if isinstance(env, Cooking):
        raise ConfigError("no_information: computed for the city-type families (city, distraction, map), not cooking")
    ids = _check_ids(env, ids)
    prior = np.arange(env.num_ids) if prior is None else _check_ids(env, prior)
    if not set(ids.tolist()) <= set(prior.tolist()):
        raise ConfigError("no_information: every id must be in the prior")
    start = start_index(env)
    position = {int(i): k for k, i in enumerate(prior)}
    out = np.zeros(len(ids))
    for instruction, p in instructions(env, int(ids[0])):
        nxt, reward, terminated, obs = tables(env, prior, instruction)
        stages = [_stage(env, reward, terminated, t) for t in range(env.max_steps)]
        memo: dict = {}

        def values(t: int, s: int, members: np.ndarray) -> np.ndarray:
            """Per member id: the value from step t in state s under the policy that is optimal for
            the belief `members` (indices into the prior)."""
            if t >= env.max_steps:
                return np.zeros(len(members))
            key = (t, s, members.tobytes())
            if key in memo:
                return memo[key]
            r_all, term_all = stages[t]
            best, best_mean = None, -np.inf
            for a in range(env.num_actions):
                r, term = r_all[members, s, a], term_all[members, s, a]
                v = r.copy()
                live = ~term
                if live.any():
                    groups: dict = {}
                    for j in np.flatnonzero(live):
                        m = members[j]
                        groups.setdefault((int(nxt[m, s, a]), obs[m, s, a].tobytes()), []).append(j)
                    for (s_next, _), js in groups.items():
                        js = np.asarray(js)
                        v[js] += values(t + 1, s_next, members[js])
                if v.mean() > best_mean + 1e-12:
                    best, best_mean = v, v.mean()
            memo[key] = best
            return best

        per_member = values(0, start, np.arange(len(prior)))
        out += p * np.array([per_member[position[int(i)]] for i in ids])
    return out
