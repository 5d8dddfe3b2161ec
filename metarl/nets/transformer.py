"""A GPT-2-style causal transformer over episode tokens, with a key/value cache (First-Explore).

Tokens. One token per step of an episode plus one at its start (Norman & Clune's layout): the token
at position 0 of an episode is (observation o_0, no action, reward 0); the token at position t+1 is
(action a_t, observation o_{t+1}, reward r_t). A token's embedding is

    LayerNorm(Dense(reward) + Dense(one-hot action) + Dense(observation) + Embed(episode))

(a LayerNorm without scale or bias, as the reference), to which the blocks add a learned embedding
of the position within the episode. `episode` is the number of context episodes the token's
episode sees (so the exploit episode that follows explore episode i shares its number, i + 1, with
explore episode i + 1). Blocks are pre-LayerNorm: x + attention(LN(x)), then x + MLP(LN(x)) with a
4x-wide ReLU MLP (the reference's DecisionTransformerConfig), then a final LayerNorm.

Attention is masked by an explicit boolean matrix, mask[q, k] = query q may read key k, so the
caller decides which episodes form the context (see `episode_mask`). Keys and values live in a
fixed-size cache ([layers, cache_len, heads, head_dim]); one call writes the keys and values of
its new tokens at given cache slots, then attends over the whole cache. The full-sequence forward
(training) is the same call on an empty cache with every token written at its own index, so acting
step by step and training compute the same function.

Options for the reference's *bandit* network (`lte_model3`; First-Explore's `reference-bandit`
preset): `layout="pull"` embeds a token as LayerNorm(Dense(reward) + Dense(one-hot action)) with
flax's default (lecun-normal) Dense initialisation, no observation and no episode embedding, and
adds an embedding (std 0.02) of the token's global index (`position`); the caller then uses one
token per pull (an empty token first). `complementary_heads=True` adds the "non-explore" and
"non-exploit" heads, trained on the samples the two policy heads do not imitate.

Everything here is unbatched (one trial); callers vmap.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

_MASKED = -1e30  # finite, so a row with no readable key gives a uniform (not NaN) softmax


@struct.dataclass
class Tokens:
    """A sequence of L tokens (unbatched; vmap adds leading axes)."""

    obs: jax.Array  #: [L, *obs_shape] float32, observation
    action: jax.Array  #: [L] int32, the action that led here; -1 for none (an episode's start)
    reward: jax.Array  #: [L] float32, the reward of that action; 0 at an episode's start
    position: jax.Array  #: [L] int32, index of the token within its episode (0 at the start)
    episode: jax.Array  #: [L] int32, number of context episodes the token's episode sees


@struct.dataclass
class KVCache:
    """Keys and values of every layer: each [layers, cache_len, heads, head_dim] float32."""

    keys: jax.Array
    values: jax.Array

    @property
    def length(self) -> int:
        return self.keys.shape[1]


def empty_cache(layers: int, length: int, heads: int, hidden: int) -> KVCache:
    """A zero cache of `length` slots."""
    shape = (layers, length, heads, hidden // heads)
    return KVCache(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))


def episode_mask(
    query_slot: jax.Array,
    query_position: jax.Array,
    query_context: jax.Array,
    key_slot: jax.Array,
    key_position: jax.Array,
    key_valid: jax.Array,
) -> jax.Array:
    """The attention mask of First-Explore's slot layout. Every episode occupies a slot; the
    context slots are 0, 1, 2, ... (explore episodes, or every episode for always-exploit).

    A query in slot qs at position qp with context c reads key (ks, kp) iff the key is valid and
    either it is earlier in the same episode (ks == qs and kp <= qp) or it belongs to one of the
    first c context slots (ks < c). So nothing flows from the future of an episode, and no episode
    outside the first c slots (later explore episodes, other exploit episodes) is ever read.

    Shapes: query_* [Lq], key_* [Lk] (int32 / bool) -> [Lq, Lk] bool."""
    same_episode = (key_slot[None, :] == query_slot[:, None]) & (key_position[None, :] <= query_position[:, None])
    in_context = key_slot[None, :] < query_context[:, None]
    return key_valid[None, :] & (same_episode | in_context)


def _dense(features: int, name: str, init_std: float = 0.02) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.normal(init_std), name=name)


class _Block(nn.Module):
    """One pre-LayerNorm transformer block reading and writing its layer of the cache."""

    hidden: int
    heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x, cache_keys, cache_values, layer, write_index, mask, rows=None):
        """x [Lq, H]; cache_keys/values [layers, Lc, heads, dh] (every layer's cache, updated in
        place at [layer, write_index]: no per-step copy of the cache); write_index [Lq] (None: the
        full-sequence forward, whose new tokens are the whole context); mask [Lq, Lc] ->
        (x [Lq, H], cache_keys, cache_values). `rows` (static indices, full-sequence forward
        only): every token gives its key and value, but only these rows are computed further
        (the last block, when only some tokens' outputs are read): x [len(rows), H]."""
        Lq, H = x.shape
        dh = H // self.heads
        h = nn.LayerNorm(epsilon=1e-5, name="ln_attention")(x)
        qkv = _dense(3 * H, "qkv")(h).reshape(Lq, 3, self.heads, dh)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        if rows is not None:
            q, x, mask, Lq = q[rows], x[rows], mask[rows], len(rows)
        if write_index is None:
            keys, values = k, v
        else:
            cache_keys = cache_keys.at[layer, write_index].set(k)
            cache_values = cache_values.at[layer, write_index].set(v)
            keys, values = cache_keys[layer], cache_values[layer]
        logits = jnp.einsum("qhd,khd->hqk", q, keys) / jnp.sqrt(jnp.float32(dh))
        logits = jnp.where(mask[None], logits, _MASKED)
        weights = jax.nn.softmax(logits, axis=-1)
        attended = jnp.einsum("hqk,khd->qhd", weights, values).reshape(Lq, H)
        x = x + _dense(H, "attention_out")(attended)
        h = nn.LayerNorm(epsilon=1e-5, name="ln_mlp")(x)
        h = nn.relu(_dense(self.mlp_ratio * H, "mlp_in")(h))
        x = x + _dense(H, "mlp_out")(h)
        return x, cache_keys, cache_values


class CausalTransformer(nn.Module):
    """First-Explore's network: token embedding, `layers` blocks, explore and exploit heads.

    `__call__(tokens [Lq], cache, write_index [Lq], mask [Lq, Lc])` ->
    (explore_logits [Lq, A], exploit_logits [Lq, A], cache). See `forward` and `step`."""

    num_actions: int
    max_positions: int  #: tokens per episode (steps + 1)
    max_episodes: int  #: rows of the episode embedding (largest context size + 1)
    hidden: int = 128
    heads: int = 4
    layers: int = 3
    mlp_ratio: int = 4
    layout: str = "episode"  #: "episode": the room network's token (above); "pull": the bandit network's
    complementary_heads: bool = False  #: add the "nonexplore_policy" and "nonexploit_policy" heads

    def embed(self, tokens: Tokens) -> jax.Array:
        """[L] tokens -> [L, H] input embeddings (token embedding plus position embedding)."""
        L = tokens.action.shape[0]
        H = self.hidden
        if self.layout == "pull":  # the reference bandit network: no obs, no episode term, default init
            reward = nn.Dense(H, name="embed_reward")(tokens.reward.astype(jnp.float32)[:, None])
            action = nn.Dense(H, name="embed_action")(jax.nn.one_hot(tokens.action, self.num_actions, dtype=jnp.float32))
            x = nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False, name="ln_token")(reward + action)
            position = nn.Embed(self.max_positions, H, embedding_init=nn.initializers.normal(0.02), name="embed_position")(
                jnp.clip(tokens.position, 0, self.max_positions - 1)
            )
            return x + position
        reward = _dense(H, "embed_reward")(tokens.reward.astype(jnp.float32)[:, None])
        action = _dense(H, "embed_action")(jax.nn.one_hot(tokens.action, self.num_actions, dtype=jnp.float32))
        obs = _dense(H, "embed_obs")(tokens.obs.reshape(L, -1).astype(jnp.float32))
        episode = nn.Embed(self.max_episodes, H, embedding_init=nn.initializers.normal(0.02), name="embed_episode")(
            jnp.clip(tokens.episode, 0, self.max_episodes - 1)
        )
        x = nn.LayerNorm(epsilon=1e-5, use_scale=False, use_bias=False, name="ln_token")(reward + action + obs + episode)
        position = nn.Embed(self.max_positions, H, embedding_init=nn.initializers.normal(0.01), name="embed_position")(
            jnp.clip(tokens.position, 0, self.max_positions - 1)
        )
        return x + position

    @nn.compact
    def __call__(self, tokens: Tokens, cache: KVCache | None, write_index: jax.Array | None, mask: jax.Array, rows=None):
        """`rows` (a static index array; full-sequence forward only): the logits of these tokens
        only ([len(rows), A]); the last block computes only their rows."""
        x = self.embed(tokens)
        keys, values = (None, None) if cache is None else (cache.keys, cache.values)
        for layer in range(self.layers):
            block = _Block(self.hidden, self.heads, self.mlp_ratio, name=f"block_{layer}")
            last = layer == self.layers - 1
            x, keys, values = block(x, keys, values, layer, write_index, mask, rows if last else None)
        x = nn.LayerNorm(epsilon=1e-5, name="ln_final")(x)
        heads = ("explore", "exploit") + (("nonexplore", "nonexploit") if self.complementary_heads else ())
        logits = {h: nn.Dense(self.num_actions, name=f"{h}_policy")(x) for h in heads}
        return logits, (None if cache is None else KVCache(keys, values))

    def empty_cache(self, length: int) -> KVCache:
        return empty_cache(self.layers, length, self.heads, self.hidden)


def forward(net: CausalTransformer, params: Any, tokens: Tokens, mask: jax.Array):
    """The full-sequence forward: L tokens, mask [L, L] -> (explore_logits [L, A],
    exploit_logits [L, A])."""
    logits = forward_heads(net, params, tokens, mask)
    return logits["explore"], logits["exploit"]


def forward_heads(net: CausalTransformer, params: Any, tokens: Tokens, mask: jax.Array, rows=None) -> dict:
    """The full-sequence forward -> {head: logits [L, A]} ("explore", "exploit", and
    "nonexplore", "nonexploit" with complementary heads); with `rows` (static indices) only
    those tokens' logits, [len(rows), A], and the last block skips the other rows."""
    return net.apply(params, tokens, None, None, mask, None if rows is None else np.asarray(rows))[0]


def step(net: CausalTransformer, params: Any, cache: KVCache, tokens: Tokens, write_index: jax.Array, mask: jax.Array):
    """Feed Lq new tokens (usually 1 or 2) into `cache`: their keys/values are written at
    write_index [Lq], then each attends over the cache with its row of mask [Lq, Lc].
    Returns (explore_logits [Lq, A], exploit_logits [Lq, A], cache)."""
    logits, cache = net.apply(params, tokens, cache, write_index, mask)
    return logits["explore"], logits["exploit"], cache


def init_params(net: CausalTransformer, key: jax.Array, obs_shape: tuple[int, ...]) -> Any:
    """Parameters for `net` from a one-token dummy sequence."""
    tokens = Tokens(
        obs=jnp.zeros((1, *obs_shape), jnp.float32),
        action=jnp.zeros((1,), jnp.int32),
        reward=jnp.zeros((1,), jnp.float32),
        position=jnp.zeros((1,), jnp.int32),
        episode=jnp.zeros((1,), jnp.int32),
    )
    return net.init(key, tokens, net.empty_cache(1), jnp.zeros((1,), jnp.int32), jnp.ones((1, 1), bool))
