"""GIFs of rollouts for families that render (`env.render(params, state) -> uint8 [H, W, 3]`).

Host-side helpers for a run's `videos/` folder; the stepping is jitted, the drawing is numpy."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from metarl.envs.base import Environment
from metarl.errors import ConfigError


def episode_frames(
    key: jax.Array,
    env: Environment,
    params: Any,
    actions: Sequence[int] | Callable[[jax.Array, jax.Array], int],
    steps: int | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """Frames of one episode of one (unbatched) task: the reset state, then the state after each
    step, until the episode ends or `steps` (default: the episode's length) steps are taken.

    `actions` is a sequence of actions or a policy `policy(key, obs) -> action`. Returns the frames
    (uint8 [H, W, 3] each) and the reward of each step."""
    if not hasattr(env, "render"):
        raise ConfigError(f"task family {env.name!r} does not render")
    steps = env.max_steps_in_episode if steps is None else steps
    if not callable(actions):
        steps = min(steps, len(actions))
    key_reset, key = jax.random.split(key)
    obs, state = env.reset(key_reset, params)
    step = jax.jit(env.step)
    frames, rewards = [env.render(params, state)], []
    for t in range(steps):
        key_act, key_step = jax.random.split(jax.random.fold_in(key, t))
        action = actions(key_act, obs) if callable(actions) else actions[t]
        obs, state, reward, terminated, truncated, _ = step(key_step, state, action, params)
        done = terminated | truncated
        frames.append(env.render(params, state))
        rewards.append(float(reward))
        if bool(done):
            break
    return frames, rewards


def save_gif(path: str | Path, frames: Sequence[np.ndarray], frame_ms: int = 250, scale: int = 1) -> Path:
    """Write `frames` (uint8 [H, W, 3] each) as a looping GIF, each frame shown `frame_ms`
    milliseconds, enlarged `scale` times (nearest neighbour). Returns the path."""
    if not frames:
        raise ConfigError("save_gif: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    if scale != 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def save_episode_gif(
    key: jax.Array,
    path: str | Path,
    env: Environment,
    params: Any,
    actions: Sequence[int] | Callable[[jax.Array, jax.Array], int],
    frame_ms: int = 250,
) -> Path:
    """`episode_frames` then `save_gif`: one episode of `params` as a GIF at `path`."""
    frames, _ = episode_frames(key, env, params, actions)
    return save_gif(path, frames, frame_ms)


def trial_frames(agent: Any, params: Any, trial: Any, task: Any, key: jax.Array) -> list[list[np.ndarray]]:
    """Frames of one trial of `agent` (greedy or not, as built) on `task`, one list per episode:
    each episode's first state, then the state after each of its steps (the last one before the
    trial resets the next episode). The trial runs as one compiled scan; the pictures are drawn
    on the host afterwards."""
    env = trial.env
    if not hasattr(env, "render"):
        raise ConfigError(f"task family {env.name!r} does not render")
    first, afters, resets, trial_done, ended = jax.tree.map(np.asarray, _trial_states(agent, params, trial, task, key))
    at = lambda tree, t: jax.tree.map(lambda x: x[t], tree)  # noqa: E731
    episodes = [[env.render(task, first)]]
    for t in range(trial_done.shape[0]):
        episodes[-1].append(env.render(task, at(afters, t)))
        if trial_done[t]:
            break
        if ended[t]:
            episodes.append([env.render(task, at(resets, t))])
    return episodes


@functools.partial(jax.jit, static_argnums=(0, 2))
def _trial_states(agent: Any, params: Any, trial: Any, task: Any, key: jax.Array):
    """(the first env state, each step's env state after its action, the env state the trial
    goes on from (the next episode's first where one ended), trial done, episode ended), each
    stacked over the trial's episodes x max_steps steps."""
    env = trial.env
    key_reset, key = jax.random.split(key)
    timestep, state = trial.reset(key_reset, task)
    carry = agent.init(key_reset)

    def body(c, t):
        timestep, state, carry = c
        key_act, key_step = jax.random.split(jax.random.fold_in(key, t))
        action, carry = agent.act(params, carry, timestep, key_act)
        after = env.step(key_step, state.env_state, action, task)[1]  # the trial's own step (same key), before its reset
        timestep, state, _, info = trial.step(key_step, state, action)
        return (timestep, state, carry), (after, state.env_state, info["trial_done"], info["terminated"] | info["truncated"])

    first = state.env_state
    _, (afters, resets, trial_done, ended) = jax.lax.scan(body, (timestep, state, carry), jnp.arange(trial.episodes * env.max_steps_in_episode))
    return first, afters, resets, trial_done, ended
