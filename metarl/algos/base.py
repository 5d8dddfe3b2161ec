"""The algorithm template and registry.

An algorithm is built from a task family and a config (a frozen, validated dataclass); in-context
algorithms also take the number of episodes in a trial. It exposes pure, jittable functions; the
host loop in `metarl.run` vmaps them over seeds, scans `update` in chunks and owns all I/O
(logging, checkpoints, evaluation):

    init(key) -> train_state                        # a pytree of arrays only
    update(train_state) -> (train_state, metrics)   # metrics: dict of float32 scalars
    evaluate(train_state, key, tasks=...) -> EvalResult   # the evaluation hook (see below)
    steps_per_update: int                           # environment steps consumed by one update

The base class does what every algorithm shares, in the manner of evosax's strategies: it turns
the key into raw key data, splits the keys of `init` and `update`, builds the common train-state
fields (`TrainState`: params, opt_state, key, update_step), counts updates, builds the optimiser
(`adamw`) and casts metrics to float32. An algorithm writes only its own parts:

    init_params(*keys) -> params                    # `init_keys` keys
    init_extra(params, *keys) -> dict               # extra train-state fields (optional; same keys)
    _update(train_state, *keys) -> (train_state, metrics)   # `update_keys` keys; the base sets
                                                    # the new key and update counter
    optimizer() -> optax transformation

Three kinds of algorithm share this template and differ in what `evaluate` does:
- `InContextAlgorithm` (RL², First-Explore): its product is an in-context agent (`agent()`,
  `agent_params(train_state)`), scored on trials of held-out tasks beside the family's classical
  baselines (`metarl.run.evaluation`); it has `episodes`, the trial's length.
- per-context policies (PPO, contextual DQN): the product is a policy scored by its return on
  each held-out (and extrapolated) context;
- learned update rules (LPG, GROOVE): the product is an update rule, scored by training fresh
  agents with it on held-out levels.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from metarl.agents import Agent
from metarl.envs.base import Environment
from metarl.errors import ConfigError, check_float, check_int


@struct.dataclass
class TrainState:
    """The fields every algorithm's train state has; algorithms subclass it to add their own."""

    params: Any  #: the learned parameters
    opt_state: Any  #: the optimiser's state
    key: jax.Array  #: uint32 [2] raw PRNG key data (raw, so checkpoints stay plain arrays)
    update_step: jax.Array  #: int32, updates done


def raw_key(key: jax.Array) -> jax.Array:
    """A typed PRNG key (`jax.random.key`) as its uint32 data; raw key data unchanged."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def adamw(
    lr: Any,
    *,
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    mask: Any = None,
    clip_norm: float = 0.0,
    clip_value: float = 0.0,
) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay on the leaves `mask` selects, all by default), after an
    element-wise clip to [-clip_value, clip_value] and/or a global-norm clip when those are > 0."""
    opt = optax.adamw(lr, eps=eps, weight_decay=weight_decay, mask=mask)
    before = ([optax.clip(clip_value)] if clip_value > 0 else []) + (
        [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    )
    return optax.chain(*before, opt) if before else opt


def sample_or_greedy(key: jax.Array, logits: jax.Array, greedy: bool) -> jax.Array:
    """An int32 action from categorical `logits` [..., A]: the most likely when `greedy`, else sampled."""
    action = jnp.argmax(logits, axis=-1) if greedy else jax.random.categorical(key, logits)
    return action.astype(jnp.int32)


def minibatch_epochs(loss_fn, optimizer, params, opt_state, data, num_minibatches: int, epochs: int, key):
    """`epochs` passes over `data` (a pytree of [B, ...] arrays, B a multiple of
    `num_minibatches`), each a fresh permutation split into `num_minibatches` gradient steps of
    `loss_fn(params, minibatch) -> (loss, stats)`; all in `lax.scan`s. Returns (params,
    opt_state, the last step's stats)."""
    B = jax.tree.leaves(data)[0].shape[0]

    def minibatch(carry, d):
        p, state = carry
        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, d)
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), stats

    def epoch(carry, k):
        order = jax.random.permutation(k, B).reshape(num_minibatches, B // num_minibatches)
        return jax.lax.scan(minibatch, carry, jax.tree.map(lambda x: x[order], data))

    (params, opt_state), stats = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))
    return params, opt_state, jax.tree.map(lambda v: v[-1, -1], stats)


def sampled_actions(logits: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(int32 actions sampled from `logits` [..., A], their log-probabilities)."""
    action = jax.random.categorical(key, logits).astype(jnp.int32)
    return action, jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]


def check_ppo_settings(owner: str, c: Any) -> None:
    """Validate the PPO fields a config shares (RL²'s, PPO's): lr, lr_decay_updates, adam_eps,
    max_grad_norm, gamma, gae_lambda, clip_eps, value_clip_eps, ent_coef, vf_coef."""
    check_float(owner, "lr", c.lr, low=0.0, low_open=True)
    check_int(owner, "lr_decay_updates", c.lr_decay_updates, low=0)
    check_float(owner, "adam_eps", c.adam_eps, low=0.0, low_open=True)
    check_float(owner, "max_grad_norm", c.max_grad_norm, low=0.0)
    check_float(owner, "gamma", c.gamma, low=0.0, high=1.0)
    check_float(owner, "gae_lambda", c.gae_lambda, low=0.0, high=1.0)
    check_float(owner, "clip_eps", c.clip_eps, low=0.0, low_open=True)
    check_float(owner, "value_clip_eps", c.value_clip_eps, low=0.0)
    check_float(owner, "ent_coef", c.ent_coef, low=0.0)
    check_float(owner, "vf_coef", c.vf_coef, low=0.0)


def agent_from_config(agent_cls: type, env: Environment, episodes: int, config: Any, **overrides: Any) -> Agent:
    """Build `agent_cls` from the config fields it shares by name (the agent's settings are the
    algorithm's; nothing is copied by hand), then `overrides`."""
    names = {f.name for f in dataclasses.fields(agent_cls) if f.init} - {"env", "episodes"}
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in names}
    return agent_cls(env=env, episodes=episodes, **{**shared, **overrides})


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """Base class: a frozen (hashable, so static under jit) dataclass of the family and config."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = type(None)  #: each algorithm sets its config dataclass
    presets: ClassVar[dict[str, Any]] = {}  #: named configs (`--preset NAME`), each a `Config`
    in_context: ClassVar[bool] = False  #: takes `episodes` and produces an in-context agent
    State: ClassVar[type] = TrainState  #: the train state's class
    init_keys: ClassVar[int] = 1  #: keys `init_params` takes
    update_keys: ClassVar[int] = 1  #: keys `_update` takes

    env: Environment

    def __post_init__(self):
        if not isinstance(self.config, self.Config):
            raise ConfigError(f"{self.name}: config must be a {self.Config.__name__}, got {type(self.config).__name__}")

    # --- what an algorithm writes -------------------------------------------------------------
    @property
    def steps_per_update(self) -> int:
        raise NotImplementedError

    def init_params(self, *keys: jax.Array) -> Any:
        raise NotImplementedError

    def init_extra(self, params: Any, *keys: jax.Array) -> dict[str, Any]:
        """Train-state fields beyond the common four (default: none); given the same keys as
        `init_params`."""
        return {}

    def optimizer(self) -> optax.GradientTransformation:
        raise NotImplementedError

    def _update(self, train_state: Any, *keys: jax.Array) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    # --- what the base does -------------------------------------------------------------------
    def init(self, key: jax.Array) -> Any:
        """A fresh train state from `key`: one compiled program (built once per algorithm, which is
        hashable), not the hundred small ones that running Flax's initialisers op by op compiles."""
        return _compiled_init(self, raw_key(key))

    def _init(self, key: jax.Array) -> Any:
        key, *keys = jax.random.split(key, 1 + self.init_keys)
        params = self.init_params(*keys)
        return self.State(
            params=params, opt_state=self.optimizer().init(params), key=key, update_step=jnp.int32(0), **self.init_extra(params, *keys)
        )

    def update(self, train_state: Any) -> tuple[Any, dict[str, jax.Array]]:
        key, *keys = jax.random.split(train_state.key, 1 + self.update_keys)
        new_state, metrics = self._update(train_state, *keys)
        new_state = new_state.replace(key=key, update_step=train_state.update_step + 1)
        return new_state, {k: jnp.mean(jnp.asarray(v)).astype(jnp.float32) for k, v in metrics.items()}

    def apply_gradients(self, train_state: Any, grads: Any) -> Any:
        """`train_state` with one optimiser step of `grads` applied to its params."""
        updates, opt_state = self.optimizer().update(grads, train_state.opt_state, train_state.params)
        return train_state.replace(params=optax.apply_updates(train_state.params, updates), opt_state=opt_state)

    def evaluate(self, train_state: Any, key: jax.Array, **options: Any) -> Any:
        """The evaluation hook: score one seed's train state (see the kinds in the module doc)."""
        raise NotImplementedError

    def constructor_options(self) -> dict[str, Any]:
        """What `make(name, env, **options, **config)` needs besides env and config (episodes)."""
        return {}

    # --- choices made for a setting or a run (the command line asks these; none is required) ---
    @classmethod
    def default_preset(cls, env: Environment, episodes: int | None = None) -> tuple[str, str] | None:
        """The preset this algorithm trains best with on `env` (and trials of `episodes`), and why
        (one line for `--help`), or None: the config's own defaults. What `metarl train` uses when
        no --preset is given; the Python API's `make` uses it only when asked (`preset="default"`)."""
        return None

    def for_run(self, total_updates: int, saved_config: dict[str, Any] | None = None) -> "Algorithm":
        """This algorithm as it trains in a run of `total_updates` updates (the host loop calls it
        before writing config.json): a config field that follows the run's length (First-Explore's
        learning-rate schedule) is resolved here. `saved_config` is the config.json `algorithm.config`
        of the run being resumed, so a resumed run keeps what it started with. Default: itself."""
        return self

    def with_run_length(self, field: str, value: int, saved_config: dict[str, Any] | None = None, *, low: int = 1,
                        before: int | None = None) -> "Algorithm":
        """`for_run`'s usual body: config field `field` (None: "the run's own length") set to the
        resumed run's saved value where there is one (an int >= `low`), else to `value`; a field
        already set stays. `before`: what a saved config written before the field existed ran with
        (None: `value`)."""
        if getattr(self.config, field) is not None:
            return self
        saved = (saved_config or {}).get(field)
        if saved_config is not None and field not in saved_config and before is not None:
            saved = before
        chosen = saved if isinstance(saved, int) and not isinstance(saved, bool) and saved >= low else value
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **{field: chosen}))


@dataclasses.dataclass(frozen=True)
class InContextAlgorithm(Algorithm):
    """An algorithm whose product is an in-context agent, trained over trials of `episodes`."""

    in_context: ClassVar[bool] = True

    episodes: int

    def __post_init__(self):
        check_int(self.name, "episodes", self.episodes, low=1)
        super().__post_init__()

    def agent(self) -> Agent:
        raise NotImplementedError

    @property
    def trial(self):
        """One trial of `episodes` episodes on the family (`metarl.envs.trial.Trial`)."""
        from metarl.envs.trial import Trial

        return Trial(self.env, self.episodes)

    @property
    def trial_steps(self) -> int:
        return self.trial.num_steps

    def agent_params(self, train_state: Any) -> Any:
        return train_state.params

    def constructor_options(self) -> dict[str, Any]:
        return {"episodes": self.episodes}

    def evaluate(self, train_state: Any, key: jax.Array, tasks: Any = 200, batch_size: int | None = None):
        """The default hook of in-context algorithms: this seed's agent on one trial of each of
        `tasks` (a batch of tasks, or a number of tasks sampled with `fold_in(key, 1)`), with
        `key` as the evaluator's key; returns numpy [tasks, episodes] per-episode returns."""
        from metarl.eval.evaluate import evaluate

        if isinstance(tasks, int):
            tasks = self.env.sample_tasks(jax.random.fold_in(key, 1), tasks)
        return evaluate(self.agent(), self.agent_params(train_state), self.env, tasks, self.episodes, key, batch_size)


@dataclasses.dataclass(frozen=True)
class PerContextAlgorithm(Algorithm):
    """An algorithm whose product is a policy for each context (PPO, DQN): it trains on streams of
    one-episode trials (`algos.streams`), and its evaluation hook scores its agent on held-out
    contexts. It writes `agent(episodes, **options)`."""

    init_keys: ClassVar[int] = 2  #: network parameters; the streams' first episodes

    def agent(self, episodes: int = 1, **options: Any) -> Agent:
        raise NotImplementedError

    def evaluate(self, train_state: Any, key: jax.Array, tasks: Any = 100, episodes: int = 1, **agent_options: Any):
        """Per-context returns: the agent on `episodes` episodes of each task in `tasks` (a batch of
        tasks, or a number sampled with `fold_in(key, 1)`) -> numpy [tasks, episodes]."""
        from metarl.eval.evaluate import evaluate

        if isinstance(tasks, int):
            tasks = self.env.sample_tasks(jax.random.fold_in(key, 1), tasks)
        if self.env.host_stepped:  # Box2D: episodes run in Gymnasium environments
            from metarl.algos import host

            return host.evaluate(self.agent(episodes, **agent_options), train_state.params, self.env, tasks, episodes, key)
        return evaluate(self.agent(episodes, **agent_options), train_state.params, self.env, tasks, episodes, key)


_ALGOS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    _ALGOS[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_ALGOS)


def algorithm_class(name: str) -> type[Algorithm]:
    if name not in _ALGOS:
        raise ConfigError(f"unknown algorithm {name!r}; valid names: {', '.join(names()) or '(none yet)'}")
    return _ALGOS[name]


def preset_config(name: str, preset: str | None, env: Environment | None = None, episodes: int | None = None) -> Any:
    """The config algorithm `name` starts from: its named `preset`, the one it chooses for `env`
    and `episodes` (`preset="default"`, see `Algorithm.default_preset`), or its config's defaults
    (None). An unknown preset is a ConfigError listing the valid ones."""
    cls = algorithm_class(name)
    if preset == "default":
        chosen = cls.default_preset(env, episodes) if env is not None else None
        preset = None if chosen is None else chosen[0]
    if preset is None:
        return cls.Config()
    if preset not in cls.presets:
        raise ConfigError(f"algorithm {name!r} has no preset {preset!r}; its presets: {', '.join(cls.presets) or '(none)'}")
    return cls.presets[preset]


def make(name: str, env: Environment, episodes: int | None = None, preset: str | None = None, **config: Any) -> Algorithm:
    """Build algorithm `name` on `env` (with trials of `episodes` episodes for an in-context
    algorithm). Its config starts from `preset` (a name, "default": the one the algorithm chooses
    for this family and trial length, None: the config's defaults) and `config` overrides its fields
    (unknown fields raise ConfigError)."""
    cls = algorithm_class(name)
    valid = [f.name for f in dataclasses.fields(cls.Config)]
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ConfigError(
            f"algorithm {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(valid)}"
        )
    if cls.in_context and episodes is None:
        raise ConfigError(f"algorithm {name!r} trains over trials: give the number of episodes per trial")
    base = preset_config(name, preset, env, episodes)
    cfg = dataclasses.replace(base, **config) if config else base
    if cls.in_context:
        return cls(env=env, episodes=episodes, config=cfg)
    return cls(env=env, config=cfg)


@functools.partial(jax.jit, static_argnums=0)
def _compiled_init(algo: Algorithm, key: jax.Array) -> Any:
    return algo._init(key)
