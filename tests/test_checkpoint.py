"""Checkpoints: exact round trip, atomic writes, keeping the last few, and a clear CheckpointError
for every way a file can be missing, truncated, garbled or belong to another configuration."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metarl.errors import CheckpointError
from metarl.run import checkpoint as ckpt

HASH = "0123456789abcdef"


def make_state(hidden=3, seed=0):
    """A train-state-like pytree: nested dicts, an optax state (namedtuples), ints, bools, a raw
    uint32 key and a typed PRNG key."""
    key = jax.random.PRNGKey(seed)
    params = {"dense": {"kernel": jax.random.normal(key, (2, hidden)), "bias": jnp.arange(hidden, dtype=jnp.float32)}}
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "key": key,
        "typed_key": jax.random.key(seed + 1),
        "update": jnp.int32(7),
        "done": jnp.array([True, False]),
        "half": jnp.ones((2,), jnp.bfloat16) * 1.5,
    }


def header(updates=7):
    return {"updates": updates, "env_steps": updates * 100, "config_hash": HASH}


def assert_same(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jnp.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_header_is_kept(tmp_path):
    state = make_state()
    path = ckpt.save_checkpoint(str(tmp_path), state, header())
    assert os.path.basename(path) == "update_000000007.ckpt"
    loaded, head = ckpt.load_checkpoint(path, make_state(seed=5), config_hash=HASH)
    assert_same(state, loaded)
    # the typed key still works as a key, and draws the same numbers
    assert jax.random.uniform(loaded["typed_key"]) == jax.random.uniform(state["typed_key"])
    assert head["updates"] == 7 and head["env_steps"] == 700 and head["config_hash"] == HASH
    assert any(leaf["path"] == "['params']['dense']['kernel']" and leaf["shape"] == [2, 3] for leaf in head["leaves"])
    # a template of shapes only (what the loop passes) works too
    loaded2, _ = ckpt.load_checkpoint(path, jax.eval_shape(lambda: make_state()))
    assert_same(state, loaded2)


def test_file_format_is_magic_json_header_msgpack_no_pickle(tmp_path):
    path = ckpt.save_checkpoint(str(tmp_path), make_state(), header())
    data = open(path, "rb").read()
    assert data.startswith(b"METARL-CHECKPOINT 1\n")
    head = json.loads(data[len(ckpt.MAGIC) : data.index(b"\n", len(ckpt.MAGIC))])
    assert head["payload_bytes"] == len(data) - data.index(b"\n", len(ckpt.MAGIC)) - 1
    assert b"\x80\x04" not in data[:2] and b"pickle" not in data


def test_keeps_the_newest_few_and_leaves_no_temporaries(tmp_path):
    for u in (5, 10, 15, 20, 25):
        ckpt.save_checkpoint(str(tmp_path), make_state(), header(u), keep=3)
    names = sorted(os.listdir(tmp_path))
    assert names == ["update_000000015.ckpt", "update_000000020.ckpt", "update_000000025.ckpt"]
    assert ckpt.latest_checkpoint(str(tmp_path)).endswith("update_000000025.ckpt")
    assert ckpt.latest_checkpoint(str(tmp_path / "none")) is None


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    good = ckpt.save_checkpoint(str(tmp_path), make_state(), header(5))

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(str(tmp_path), make_state(), header(10))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["update_000000005.ckpt"]  # no half file, no temporary
    assert_same(ckpt.load_checkpoint(good, make_state())[0], make_state())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(str(tmp_path / "update_000000001.ckpt"), make_state())


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d[: len(d) // 2], "truncated"),  # cut inside the payload
        (lambda d: d[:30], "header is incomplete|not valid"),  # cut inside the header
        (lambda d: b"", "is empty"),  # empty file
        (lambda d: d[:-100] + bytes(b ^ 0xFF for b in d[-100:-99]) + d[-99:], "SHA-256"),  # one byte flipped
        (lambda d: b"PK\x03\x04" + d[4:], "not a metarl checkpoint"),  # some other file
        (lambda d: d.replace(b'"updates":7', b'"updates":7,,', 1), "header is not valid"),  # garbled header
    ],
    ids=["truncated-payload", "truncated-header", "empty", "flipped-byte", "wrong-magic", "garbled-header"],
)
def test_corrupt_checkpoints_raise_checkpoint_error(tmp_path, damage, message):
    path = ckpt.save_checkpoint(str(tmp_path), make_state(), header())
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(damage(data))
    with pytest.raises(CheckpointError, match=message) as err:
        ckpt.load_checkpoint(path, make_state(), config_hash=HASH)
    assert path in str(err.value)  # the message names the file


def test_mismatched_checkpoints_raise_checkpoint_error(tmp_path):
    path = ckpt.save_checkpoint(str(tmp_path), make_state(hidden=3), header())
    with pytest.raises(CheckpointError, match="different configuration"):
        ckpt.load_checkpoint(path, make_state(), config_hash="ffffffffffffffff")
    with pytest.raises(CheckpointError, match=r"\['dense'\]\['bias'\] is \(3,\) float32 in the checkpoint but .* is \(4,\) float32 here"):
        ckpt.load_checkpoint(path, make_state(hidden=4))
    other = make_state()
    other["update"] = jnp.float32(7)  # same shape, other dtype
    with pytest.raises(CheckpointError, match=r"\['update'\] is \(\) int32 in the checkpoint but \['update'\] is \(\) float32"):
        ckpt.load_checkpoint(path, other)
    fewer = make_state()
    del fewer["half"]
    with pytest.raises(CheckpointError, match="it has 1[0-9] arrays, the algorithm builds"):
        ckpt.load_checkpoint(path, fewer)
