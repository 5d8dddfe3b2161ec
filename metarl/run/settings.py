"""`TrainSettings`: everything the host loop needs besides the algorithm, in one frozen, validated
dataclass. `metarl train`'s run flags are its fields, parsed by tyro from this class (types,
defaults and the `#:` comments as help): `--steps` and `--out` set `total_steps` and `out_dir`,
fields marked `Suppress` are for the Python API only."""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated

import jax
import jax.numpy as jnp
import tyro

from metarl.errors import check, check_float, check_int
from metarl.flags import NamesFlag

#: fold_in constant separating training keys from evaluation keys (PRNGKey(eval_seed) itself)
TRAIN_STREAM = 0x7472_6E  # "trn"



def flag_name(cls: type, field: str) -> str:
    """The command-line flag that sets `field` of the dataclass `cls` (its tyro name, else the
    field's name with dashes: `TrainSettings.total_steps` -> `--steps`)."""
    hint = typing.get_type_hints(cls, include_extras=True).get(field)
    arg_config = type(tyro.conf.arg())
    for meta in getattr(hint, "__metadata__", ()):
        if isinstance(meta, arg_config) and isinstance(getattr(meta, "name", None), str):
            return "--" + meta.name
    return "--" + field.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How to train: budget, seeds, run folder, evaluation, checkpoints and chunking."""

    total_steps: Annotated[int, tyro.conf.arg(name="steps", metavar="N")]  #: environment steps per seed to train for
    out_dir: Annotated[str, tyro.conf.arg(name="out", metavar="DIR")]  #: the run folder to write, runs/NAME
    seeds: int = 1  #: independent training seeds, trained at once (vmapped)
    seed: int = 0  #: seed i trains from fold_in(fold_in(PRNGKey(seed), stream), i)
    resume: bool = False  #: continue the run in out_dir from its last good checkpoint
    eval_every: int | None = None  #: env steps between held-out evaluations (None: at the end only; 0: never)
    eval_tasks: int = 200  #: held-out tasks per evaluation (0: no evaluation)
    eval_seed: int | None = None  #: held-out tasks are sample_tasks(PRNGKey(eval_seed)) (None: seed)
    eval_baselines: Annotated[tuple[str, ...] | None, NamesFlag] = None  #: baselines shown beside the agent, comma-separated ("all": every one that applies; "none": no baselines)
    checkpoint_every: int | None = None  #: env steps between checkpoints (None: by time only)
    checkpoint_seconds: float = 300.0  #: at most this many seconds between checkpoints
    keep_checkpoints: int = 3  #: checkpoints kept (the newest)
    chunk_seconds: float = 5.0  #: target seconds of one jitted chunk of updates (I/O happens between chunks)
    max_chunk_updates: tyro.conf.Suppress[int] = 10_000  #: the most updates in one chunk
    chunk_updates: tyro.conf.Suppress[int | None] = None  #: a fixed chunk length instead of one sized by time
    progress: tyro.conf.Suppress[bool | None] = None  #: a progress bar (None: when stderr is a terminal)
    quiet: bool = False  #: no progress bar or log lines
    tensorboard: tyro.conf.Suppress[bool] = True  #: write TensorBoard events
    command: tyro.conf.Suppress[tuple[str, ...] | None] = None  #: the command line that started the run (recorded in config.json)

    def __post_init__(self):
        o = "train"
        check_int(o, "total_steps", self.total_steps, low=1)
        check(isinstance(self.out_dir, str) and self.out_dir.strip() != "", f"{o}: out_dir must be a folder path, got {self.out_dir!r}", "out_dir")
        check_int(o, "seeds", self.seeds, low=1)
        check_int(o, "seed", self.seed, low=0)
        for name in ("resume", "quiet", "tensorboard"):
            check(isinstance(getattr(self, name), bool), f"{o}: {name} must be true or false, got {getattr(self, name)!r}", name)
        if self.eval_every is not None:
            check_int(o, "eval_every", self.eval_every, low=0)
        check_int(o, "eval_tasks", self.eval_tasks, low=0)
        if self.eval_seed is not None:
            check_int(o, "eval_seed", self.eval_seed, low=0)
        if self.eval_baselines is not None:
            object.__setattr__(self, "eval_baselines", tuple(self.eval_baselines))
        if self.checkpoint_every is not None:
            check_int(o, "checkpoint_every", self.checkpoint_every, low=1)
        check_float(o, "checkpoint_seconds", self.checkpoint_seconds, low=0.0)
        check_int(o, "keep_checkpoints", self.keep_checkpoints, low=1)
        check_float(o, "chunk_seconds", self.chunk_seconds, low=0.0, low_open=True)
        check_int(o, "max_chunk_updates", self.max_chunk_updates, low=1)
        if self.chunk_updates is not None:
            check_int(o, "chunk_updates", self.chunk_updates, low=1)
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))

    @property
    def evaluation_seed(self) -> int:
        return self.seed if self.eval_seed is None else self.eval_seed


def init_keys(seed: int, seeds: int) -> jax.Array:
    """[seeds, 2] uint32 keys, one per training seed, from a stream disjoint from evaluation's."""
    root = jax.random.fold_in(jax.random.PRNGKey(seed), TRAIN_STREAM)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(seeds, dtype=jnp.uint32))
