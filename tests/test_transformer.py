"""The causal transformer: masks (no future, no exploit episodes in the context), KV cache == full."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl.nets.transformer import CausalTransformer, Tokens, episode_mask, forward, init_params, step

A, S = 3, 3  # actions, tokens per episode
NET = CausalTransformer(num_actions=A, max_positions=S, max_episodes=4, hidden=32, heads=4, layers=2)

# Slot layout of a 2-explore-episode task as First-Explore trains it: explore slots 0, 1 (contexts 0,
# 1), then exploit slots 2, 3 that follow explore 0 and 1 (contexts 1, 2).
SLOT_CONTEXT = np.array([0, 1, 1, 2])
SLOTS = np.repeat(np.arange(4), S)
POSITIONS = np.tile(np.arange(S), 4)
L = SLOTS.size


def _tokens(key, length=L):
    k1, k2, k3 = jax.random.split(key, 3)
    return Tokens(
        obs=jax.random.normal(k1, (length, 2)),
        action=jnp.where(jnp.asarray(POSITIONS[:length]) == 0, -1, jax.random.randint(k2, (length,), 0, A)),
        reward=jax.random.normal(k3, (length,)),
        position=jnp.asarray(POSITIONS[:length], jnp.int32),
        episode=jnp.asarray(SLOT_CONTEXT[SLOTS[:length]], jnp.int32),
    )


def _mask(valid=None):
    valid = np.ones(L, bool) if valid is None else valid
    return episode_mask(
        jnp.asarray(SLOTS), jnp.asarray(POSITIONS), jnp.asarray(SLOT_CONTEXT[SLOTS]),
        jnp.asarray(SLOTS), jnp.asarray(POSITIONS), jnp.asarray(valid),
    )


@pytest.fixture(scope="module")
def params():
    return init_params(NET, jax.random.PRNGKey(0), (2,))


def test_mask_by_hand():
    m = np.asarray(_mask())
    q = lambda slot, pos: slot * S + pos  # noqa: E731
    # explore 0 reads only itself, causally
    assert m[q(0, 1)].nonzero()[0].tolist() == [q(0, 0), q(0, 1)]
    # explore 1 reads all of explore 0 and its own past
    assert m[q(1, 0)].nonzero()[0].tolist() == [q(0, 0), q(0, 1), q(0, 2), q(1, 0)]
    # the exploit episode after explore 0 reads explore 0 and itself, never explore 1
    assert m[q(2, 2)].nonzero()[0].tolist() == [q(0, 0), q(0, 1), q(0, 2), q(2, 0), q(2, 1), q(2, 2)]
    # the exploit episode after explore 1 reads both explore episodes, never the other exploit episode
    assert m[q(3, 0)].nonzero()[0].tolist() == [q(0, 0), q(0, 1), q(0, 2), q(1, 0), q(1, 1), q(1, 2), q(3, 0)]


def _perturb(tokens, index, key):
    return tokens.replace(
        obs=tokens.obs.at[index].add(jax.random.normal(key, (2,)) + 3.0),
        reward=tokens.reward.at[index].add(5.0),
        action=tokens.action.at[index].set((jnp.maximum(tokens.action[index], 0) + 1) % A),
    )


_forward = jax.jit(lambda params, tokens, mask: forward(NET, params, tokens, mask))
_step = jax.jit(lambda params, cache, tokens, index, mask: step(NET, params, cache, tokens, index, mask))


def _outputs(params, tokens, mask):
    explore, exploit = _forward(params, tokens, mask)
    return np.concatenate([np.asarray(explore), np.asarray(exploit)], axis=-1)


def test_no_information_from_the_future(params):
    tokens = _tokens(jax.random.PRNGKey(1))
    mask = _mask()
    base = _outputs(params, tokens, mask)
    for index in (q for q in range(L) if POSITIONS[q] > 0):
        out = _outputs(params, _perturb(tokens, index, jax.random.PRNGKey(index)), mask)
        slot, pos = SLOTS[index], POSITIONS[index]
        earlier = (SLOTS == slot) & (POSITIONS < pos)
        np.testing.assert_allclose(out[earlier], base[earlier], atol=1e-5)
        # the perturbed token itself does change (the test is not vacuous)
        assert np.abs(out[index] - base[index]).max() > 1e-3


def test_no_information_from_exploit_episodes(params):
    tokens = _tokens(jax.random.PRNGKey(2))
    mask = _mask()
    base = _outputs(params, tokens, mask)
    for exploit_slot in (2, 3):
        perturbed = tokens
        for index in np.nonzero(SLOTS == exploit_slot)[0]:
            perturbed = _perturb(perturbed, int(index), jax.random.PRNGKey(100 + int(index)))
        out = _outputs(params, perturbed, mask)
        others = SLOTS != exploit_slot
        np.testing.assert_allclose(out[others], base[others], atol=1e-5)
        assert np.abs(out[~others] - base[~others]).max() > 1e-3
    # an explore episode does flow into later episodes (explore 0 -> explore 1 and both exploits)
    perturbed = _perturb(tokens, 0, jax.random.PRNGKey(7))
    out = _outputs(params, perturbed, mask)
    for slot in (1, 2, 3):
        assert np.abs(out[SLOTS == slot] - base[SLOTS == slot]).max() > 1e-3


def test_invalid_keys_are_ignored(params):
    tokens = _tokens(jax.random.PRNGKey(3))
    valid = np.ones(L, bool)
    valid[S - 1] = False  # explore 0 ended before its last token
    mask = _mask(valid)
    base = _outputs(params, tokens, mask)
    out = _outputs(params, _perturb(tokens, S - 1, jax.random.PRNGKey(4)), mask)
    keep = np.arange(L) != S - 1
    np.testing.assert_allclose(out[keep], base[keep], atol=1e-5)


def test_kv_cache_step_equals_full_forward(params):
    tokens = _tokens(jax.random.PRNGKey(5))
    mask = _mask()
    full_explore, full_exploit = forward(NET, params, tokens, mask)

    @jax.jit
    def run(tokens, mask):
        def body(cache, i):
            one = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, i, 1), tokens)
            explore, exploit, cache = step(NET, params, cache, one, i[None], mask[i][None])
            return cache, (explore[0], exploit[0])

        return jax.lax.scan(body, NET.empty_cache(L), jnp.arange(L))[1]

    step_explore, step_exploit = run(tokens, mask)
    np.testing.assert_allclose(step_explore, full_explore, atol=1e-5)
    np.testing.assert_allclose(step_exploit, full_exploit, atol=1e-5)


def test_kv_cache_two_tokens_at_scattered_slots(params):
    """Feeding tokens in a different memory order, two at a time at scattered cache slots (what the
    agent does with its closing token), gives the same outputs: attention reads the mask only."""
    tokens = _tokens(jax.random.PRNGKey(6))
    mask = np.asarray(_mask())
    full_explore, _ = forward(NET, params, tokens, jnp.asarray(mask))
    order = np.arange(L)  # causal order of feeding, but stored at permuted cache slots
    where = np.random.default_rng(0).permutation(L)
    cache = NET.empty_cache(L)
    outs = np.zeros((L, A), np.float32)
    for start in range(0, L, 2):
        idx = order[start:start + 2]
        cache_mask = np.zeros((idx.size, L), bool)
        for r, q in enumerate(idx):
            cache_mask[r, where] = mask[q]
        one = jax.tree.map(lambda x: x[idx], tokens)
        explore, _, cache = _step(params, cache, one, jnp.asarray(where[idx]), jnp.asarray(cache_mask))
        outs[idx] = np.asarray(explore)
    np.testing.assert_allclose(outs, full_explore, atol=1e-5)
