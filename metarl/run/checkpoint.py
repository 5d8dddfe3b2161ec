"""Checkpoints: atomic, self-checking, no pickle.

A checkpoint file is

    b"METARL-CHECKPOINT 1\\n"
    one line of JSON: the header (updates, env steps, config hash, the payload's size and SHA-256,
                      and every leaf's path, shape and dtype)
    the payload: msgpack (flax.serialization) of the train state's leaves as numpy arrays

Loading checks, in order: the magic line, the header, the payload's size and hash (a truncated or
garbled file), the config hash (a checkpoint of another run), then every leaf's path, shape and
dtype against the state this run's algorithm builds. Any failure raises `CheckpointError` naming
the file and what is wrong. Nothing is ever unpickled.

Writes go to a temporary file in the same directory, are fsynced, then `os.replace`d into place,
so a crash leaves either the old set of checkpoints or the new one, never half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from metarl.errors import CheckpointError

MAGIC = b"METARL-CHECKPOINT 1\n"
_NAME = re.compile(r"^update_(\d{9,})\.ckpt$")


def checkpoint_name(updates: int) -> str:
    return f"update_{updates:09d}.ckpt"


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint files in `directory`, oldest (fewest updates) first; temporaries are ignored."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: str) -> str | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _leaf_spec(path, leaf) -> dict[str, Any]:
    return {"path": jax.tree_util.keystr(path), "shape": list(leaf.shape), "dtype": str(leaf.dtype)}


def save_checkpoint(directory: str, state: Any, header: dict[str, Any], keep: int | None = 3) -> str:
    """Write `state` (a pytree of arrays) with `header` (JSON-able; must hold `updates`) to
    `directory/update_XXXXXXXXX.ckpt` atomically, then delete all but the newest `keep`.
    Returns the path written."""
    os.makedirs(directory, exist_ok=True)
    leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(state)
    arrays, specs = [], []
    for path, leaf in leaves_with_paths:
        spec = _leaf_spec(path, leaf)
        if _is_key(leaf):
            spec["key_impl"] = _key_impl_name(leaf)
            leaf = jax.random.key_data(leaf)
        arrays.append(np.array(leaf, copy=True))  # copy: the device buffer may be donated next
        specs.append(spec)
    payload = serialization.msgpack_serialize({"leaves": arrays})
    full_header = {
        **header,
        "leaves": specs,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = json.dumps(full_header, separators=(",", ":")).encode()
    path = os.path.join(directory, checkpoint_name(int(header["updates"])))
    write_bytes_atomic(path, MAGIC + head + b"\n" + payload, suffix=".ckpt")
    if keep is not None:
        for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
            os.unlink(old)
    return path


def _key_impl_name(key) -> str:
    impl = jax.random.key_impl(key)
    return getattr(impl, "name", None) or str(impl)


def write_bytes_atomic(path: str, data: bytes, suffix: str = "") -> None:
    """Write `data` to `path` so that a reader (or a crash) sees the old file or the whole new one:
    a temporary file in the same directory, fsync, `os.replace`, then fsync of the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_header(path: str) -> tuple[dict[str, Any], bytes]:
    """The header and raw payload of a checkpoint, after checking size and hash."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not data:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a metarl checkpoint (or its start is corrupt): wrong magic bytes")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: its header is incomplete")
    try:
        header = json.loads(data[len(MAGIC) : end])
        size, digest = int(header["payload_bytes"]), header["payload_sha256"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path} is corrupt: its header is not valid") from None
    payload = data[end + 1 :]
    if len(payload) != size:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: payload has {len(payload)} bytes, the header says {size}"
        )
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt: its payload does not match the SHA-256 in its header")
    return header, payload


def load_checkpoint(path: str, template: Any, config_hash: str | tuple[str, ...] | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint into the structure of `template` (a pytree of arrays or
    `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`). Returns (state, header).

    Raises `CheckpointError` for a missing, truncated or garbled file, a `config_hash` other than
    the one given (or any of several given),
    or leaves whose paths, shapes or dtypes differ from the template's."""
    header, payload = read_header(path)
    accepted = (config_hash,) if isinstance(config_hash, str) else config_hash
    if accepted is not None and header.get("config_hash") not in accepted:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different configuration (its config hash is "
            f"{header.get('config_hash')}, this run's is {accepted[0]}): the algorithm, its config, the "
            "family, episodes, seeds or seed differ"
        )
    try:
        restored = serialization.msgpack_restore(payload)
        arrays = restored["leaves"]
        arrays = [arrays[str(i)] for i in range(len(arrays))] if isinstance(arrays, dict) else list(arrays)
    except Exception as e:  # msgpack raises many types on garbage; the hash makes this unlikely
        raise CheckpointError(f"checkpoint {path} is corrupt: cannot decode its payload ({e})") from None
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    specs = header.get("leaves", [])
    if len(specs) != len(leaves_with_paths) or len(arrays) != len(specs):
        raise CheckpointError(
            f"checkpoint {path} does not match this run's train state: it has {len(specs)} arrays, "
            f"the algorithm builds {len(leaves_with_paths)} (a different algorithm or configuration)"
        )
    out = []
    for (tpath, tleaf), spec, arr in zip(leaves_with_paths, specs, arrays):
        want = _leaf_spec(tpath, tleaf)
        is_key = _is_key(tleaf)
        if is_key:
            want_data = jax.eval_shape(jax.random.key_data, tleaf)
            want_shape, want_dtype = list(want_data.shape), str(want_data.dtype)
        else:
            want_shape, want_dtype = want["shape"], want["dtype"]
        got_shape, got_dtype = list(np.shape(arr)), str(np.asarray(arr).dtype)
        if spec["path"] != want["path"] or spec["shape"] != want["shape"] or spec["dtype"] != want["dtype"]:
            raise CheckpointError(
                f"checkpoint {path} does not match this run's train state: leaf {spec['path']} is "
                f"{tuple(spec['shape'])} {spec['dtype']} in the checkpoint but {want['path']} is "
                f"{tuple(want['shape'])} {want['dtype']} here (a different algorithm or configuration)"
            )
        if got_shape != want_shape or got_dtype != want_dtype:
            raise CheckpointError(f"checkpoint {path} is corrupt: leaf {spec['path']} has shape {got_shape} {got_dtype}")
        arr = np.asarray(arr)
        if is_key:
            out.append(jax.random.wrap_key_data(jnp.asarray(arr), impl=spec.get("key_impl")))
        else:
            out.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out), header


def load_latest_valid(
    directory: str, template: Any, config_hash: str | tuple[str, ...] | None = None, log=None
) -> tuple[Any, dict[str, Any], str, list[tuple[str, str]]]:
    """Load the newest checkpoint in `directory` that verifies, skipping corrupt or truncated
    newer ones. Returns (state, header, path, skipped) with skipped = [(path, why)], each also
    passed to `log` (a callable taking one line) when given. A checkpoint of another
    configuration is not skipped: it raises, since every older one would be of the same run.
    Raises `CheckpointError` when there is none, or none verifies (listing why each failed)."""
    found = list_checkpoints(directory)
    if not found:
        raise CheckpointError(f"no checkpoint in {directory}")
    skipped: list[tuple[str, str]] = []
    for path in reversed(found):
        try:
            state, header = load_checkpoint(path, template, config_hash)
        except CheckpointError as error:
            if "belongs to a different configuration" in str(error) or "does not match this run" in str(error):
                raise
            skipped.append((path, str(error)))
            if log is not None:
                log(f"skipping checkpoint {os.path.basename(path)}: {error}")
            continue
        return state, header, path, skipped
    reasons = "; ".join(f"{os.path.basename(p)}: {why}" for p, why in skipped)
    raise CheckpointError(f"no checkpoint in {directory} verifies ({reasons})")
