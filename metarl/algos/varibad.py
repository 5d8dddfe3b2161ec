"""VariBAD (Zintgraf, Shiarlis, Igl, Schulze, Gal, Hofmann, Whiteson 2020: *VariBAD: A Very Good
Method for Bayes-Adaptive Deep RL via Meta-Learning*), as DREAM's paper runs it as a baseline, on
the two-phase trials of `metarl.envs.dream_grid` (or any family with discrete actions).

- Encoder: a GRU over the trial, [observation, previous action, previous reward, episode-done
  flag] at each step, gives the posterior q(m | tau_:t) = N(mu_t, diag(sigma_t^2)) over a task
  latent m of `latent_dim`.
- Decoder: from a sample m_i ~ q(. | tau_:i) at every step i, predict the reward r_t and the next
  observation s_{t+1} (one-hot entries, as the learners read it) of every transition t of the
  trial, past and future (the reference's "decode the whole trajectory" loss: sum over t, mean over
  i), from (m_i, s_t, a_t). Loss: squared errors, the state's weighted `state_coef`, plus
  `kl_coef` x KL(q_i || q_{i-1}) (q_{-1} = N(0, I)), the ELBO's prior term as in VariBAD.
- Policy: an actor-critic MLP on (s_t, mu_t, sigma_t) with the posterior's gradient
  stopped (VariBAD trains the encoder by the ELBO alone), by PPO on the exploitation rewards
  (E-RL²'s objective; `counted_from_episode`). It reads the posterior's std, not its
  log-variance: the trained log-variances sit near -6 in every dimension, and as inputs they
  swamped the observation's one-hot entries (the exploit policy stayed at -1.4 on city, where it
  reaches 0.29 in 300k steps reading the std).
- Two optimisers, as VariBAD's code has: the policy's Adam (`lr`, its gradient norm clipped to
  `max_grad_norm`) and the VAE's (`vae_lr`, clipped alone). One clip over both would let the
  ELBO's gradient, summed over the trial's transitions and far larger than PPO's, scale the
  policy's step down (this alone did not unstick the policy on city: the std input did).

The reference DREAM code runs VariBAD with a deterministic encoder (std 1e-6, its KL term
commented out) and a recurrent DQN; this is VariBAD's own form with a PPO learner.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metarl.agents import Agent
from metarl.algos.base import adamw, agent_from_config, register
from metarl.algos.import_rl import TrialPPO, TrialPPOConfig
from metarl.envs.dream_grid import one_hot_observation
from metarl.envs.trial import TimeStep
from metarl.errors import check_float, check_int
from metarl.nets.init import orthogonal  # not Flax's: its batched QR deadlocks under vmap (metarl.nets.init)
from metarl.ops.ppo import masked_mean


@dataclasses.dataclass(frozen=True)
class VariBADConfig(TrialPPOConfig):
    """VariBAD settings (PPO learner; the PPO fields are `TrialPPOConfig`'s)."""

    owner: ClassVar[str] = "varibad"
    positive_ints: ClassVar[tuple[str, ...]] = ("hidden", "latent_dim")
    weights: ClassVar[tuple[str, ...]] = ("state_coef", "kl_coef", "elbo_coef")
    widths: ClassVar[tuple[str, ...]] = ("decoder_hidden", "policy_hidden")

    hidden: int = 128  #: the encoder's GRU units
    latent_dim: int = 16  #: the task latent m (the reference: 64)
    decoder_hidden: tuple[int, ...] = (128, 128)  #: the reward and state decoder's hidden widths
    policy_hidden: tuple[int, ...] = (128, 128)  #: the actor-critic's hidden widths
    state_coef: float = 1.0  #: weight of the next-observation reconstruction
    kl_coef: float = 0.1  #: weight of KL(q_t || q_{t-1})
    elbo_coef: float = 1.0  #: weight of the whole ELBO loss beside PPO's
    #: encoder steps per trial whose latent decodes the whole trial, drawn at random each update
    #: (VariBAD's ELBO subsampling; 0: every step, T x T decodings per trial)
    elbo_steps: int = 8
    vae_lr: float = 1e-3  #: the encoder and decoder's Adam learning rate (the policy's: `lr`)

    def __post_init__(self):
        super().__post_init__()
        check_int(self.owner, "elbo_steps", self.elbo_steps, low=0, high=1_000_000)
        check_float(self.owner, "vae_lr", self.vae_lr, low=0.0, low_open=True)


PRESETS: dict[str, VariBADConfig] = {"default": VariBADConfig()}


def gaussian_kl(mu, logvar, mu0, logvar0):
    """KL(N(mu, e^logvar) || N(mu0, e^logvar0)) of diagonal Gaussians, summed over the last axis."""
    return 0.5 * jnp.sum(logvar0 - logvar + (jnp.exp(logvar) + jnp.square(mu - mu0)) / jnp.exp(logvar0) - 1.0, axis=-1)


class VariBADNetwork(nn.Module):
    num_actions: int
    obs_size: int
    hidden: int
    latent_dim: int
    decoder_hidden: tuple[int, ...]
    policy_hidden: tuple[int, ...]

    def setup(self):
        self.inp = nn.Dense(64)
        self.cell = nn.GRUCell(self.hidden, recurrent_kernel_init=orthogonal())
        self.mu = nn.Dense(self.latent_dim)
        self.logvar = nn.Dense(self.latent_dim)
        self.dec = [nn.Dense(w) for w in self.decoder_hidden]
        self.dec_reward = nn.Dense(1)
        self.dec_state = nn.Dense(self.obs_size)
        self.pol = [nn.Dense(w) for w in self.policy_hidden]
        self.pi = nn.Dense(self.num_actions, kernel_init=orthogonal(0.01))
        self.v = nn.Dense(1)

    def encode(self, h, x):
        """One encoder step: (the new state, the posterior's mean and log-variance)."""
        h, y = self.cell(h, nn.relu(self.inp(x)))
        return h, self.mu(y), self.logvar(y)

    def decode(self, m, obs, action_one_hot):
        """(predicted reward, predicted next observation) of a transition under latent m."""
        x = jnp.concatenate([m, obs, action_one_hot], axis=-1)
        for layer in self.dec:
            x = nn.relu(layer(x))
        return self.dec_reward(x)[..., 0], self.dec_state(x)

    def policy(self, obs, mu, logvar):
        x = jnp.concatenate([obs, mu, jnp.exp(0.5 * logvar)], axis=-1)  # the std, bounded, not the log-variance
        for layer in self.pol:
            x = nn.relu(layer(x))
        return self.pi(x), self.v(x)[..., 0]

    def __call__(self, obs, x):  # touches every part (init)
        _, mu, logvar = self.encode(jnp.zeros(x.shape[:-1] + (self.hidden,)), x)
        self.decode(mu, obs, jnp.zeros(x.shape[:-1] + (self.num_actions,)))
        return self.policy(obs, mu, logvar)


POLICY_MODULES = ("pi", "v")  #: with the `pol_*` layers: the actor-critic; the rest is the VAE


def param_parts(params):
    """`params` with each leaf replaced by "policy" (the actor-critic's) or "vae" (encoder, decoder)."""
    def label(path, _):
        name = next(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey) and k.key != "params")
        return "policy" if name in POLICY_MODULES or name.startswith("pol_") else "vae"

    return jax.tree_util.tree_map_with_path(label, params)


@dataclasses.dataclass(frozen=True)
class VariBADAgent(Agent):
    """VariBAD's policy as an agent: carry = the encoder's GRU state; it acts on the posterior."""

    name = "varibad"

    hidden: int = 128
    latent_dim: int = 16
    decoder_hidden: tuple[int, ...] = (128, 128)
    policy_hidden: tuple[int, ...] = (128, 128)
    one_hot_obs: bool = True
    greedy: bool = True

    def encode(self, obs):
        return one_hot_observation(self.env, obs) if self.one_hot_obs else obs

    @property
    def obs_size(self) -> int:
        return int(self.encode(jnp.zeros(self.env.obs_shape)).shape[-1])

    @property
    def network(self) -> VariBADNetwork:
        return VariBADNetwork(self.env.num_actions, self.obs_size, self.hidden, self.latent_dim,
                              tuple(self.decoder_hidden), tuple(self.policy_hidden))

    def init(self, key):
        return {"h": jnp.zeros((self.hidden,))}

    def step(self, params, carry, timestep: TimeStep):
        """One step of one trial: (carry, logits, value, (mu_t, logvar_t))."""
        net = self.network
        h = jnp.where(timestep.first, jnp.zeros_like(carry["h"]), carry["h"])
        obs = self.encode(timestep.obs)
        prev = jax.nn.one_hot(timestep.prev_action, self.env.num_actions) * (~timestep.first)
        x = jnp.concatenate([obs, prev, timestep.prev_reward[None], timestep.done.astype(jnp.float32)[None]])
        h, mu, logvar = net.apply(params, h, x, method=VariBADNetwork.encode)
        logits, value = net.apply(params, obs, jax.lax.stop_gradient(mu), jax.lax.stop_gradient(logvar), method=VariBADNetwork.policy)
        return {"h": h}, logits, value, (mu, logvar)

    def act(self, params, carry, timestep, key):
        carry, logits, _, _ = self.step(params, carry, timestep)
        action = jnp.argmax(logits) if self.greedy else jax.random.categorical(key, logits)
        return action.astype(jnp.int32), carry


@register
@dataclasses.dataclass(frozen=True)
class VariBAD(TrialPPO):
    """VariBAD. `make("varibad", env, 1 + exploitation episodes, ...)`."""

    name = "varibad"
    Config = VariBADConfig
    presets: ClassVar[dict[str, VariBADConfig]] = PRESETS

    config: VariBADConfig = VariBADConfig()

    @classmethod
    def default_preset(cls, env, episodes=None):
        return "default", "VariBAD with a PPO learner"

    def agent(self, greedy: bool = True) -> VariBADAgent:
        return agent_from_config(VariBADAgent, self.env, self.episodes, self.config, greedy=greedy)

    def init_params(self, key_params):
        agent = self.agent()
        obs = jnp.zeros((agent.obs_size,))
        x = jnp.zeros((agent.obs_size + self.env.num_actions + 2,))
        return agent.network.init(key_params, obs, x)

    def initial_carry(self, params, inputs):
        return self.agent().init(None)

    def optimizer(self):
        """The policy's and the VAE's Adam, each clipped to `max_grad_norm` on its own gradient."""
        c = self.config
        return optax.multi_transform(
            {"policy": adamw(c.lr, eps=1e-5, clip_norm=c.max_grad_norm), "vae": adamw(c.vae_lr, eps=1e-5, clip_norm=c.max_grad_norm)},
            param_parts)

    def trial_inputs(self, tasks, key):
        return {"key": jax.random.split(key, self.config.trials_per_update)}  # each trial's latent samples

    def elbo_loss(self, params, batch, mu, logvar, valid, key, elbo_steps=None):
        """One trial's negative ELBO [scalar] and its parts: each chosen step's latent sample
        decodes every transition of the trial (mean over the chosen valid encoder steps, sum over
        transitions); `elbo_steps` steps drawn at random (None: the config's; 0: all)."""
        c, agent = self.config, self.agent()
        net = agent.network
        T = mu.shape[0]
        k = c.elbo_steps if elbo_steps is None else elbo_steps
        key_sample, key_steps = jax.random.split(key)
        m_all = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key_sample, mu.shape)  # [T, L]
        chosen = jnp.arange(T) if not k or k >= T else jax.random.permutation(key_steps, T)[:k]
        m = m_all[chosen]
        obs = agent.encode(batch["timestep"].obs)  # [T, O]
        act = jax.nn.one_hot(batch["action"], self.env.num_actions)
        target_obs = agent.encode(batch["next_obs"])
        pred_r, pred_s = jax.vmap(lambda mi: net.apply(params, jnp.broadcast_to(mi, (obs.shape[0], mi.shape[0])), obs, act,
                                                      method=VariBADNetwork.decode))(m)  # [K, T_t], [K, T_t, O]
        w = valid.astype(jnp.float32)
        pair = w[chosen][:, None] * w[None, :]
        reward_err = jnp.sum(jnp.square(pred_r - batch["reward"][None]) * pair, 1)  # [T_i]
        state_err = jnp.sum(jnp.sum(jnp.square(pred_s - target_obs[None]), -1) * pair, 1)
        mu0 = jnp.concatenate([jnp.zeros_like(mu[:1]), mu[:-1]])
        logvar0 = jnp.concatenate([jnp.zeros_like(logvar[:1]), logvar[:-1]])
        kl = gaussian_kl(mu, logvar, mu0, logvar0)
        reward_loss, state_loss = (masked_mean(x, w[chosen]) for x in (reward_err, state_err))
        kl_loss = masked_mean(kl, w)
        return reward_loss + c.state_coef * state_loss + c.kl_coef * kl_loss, (reward_loss, state_loss, kl_loss)

    def aux_loss(self, params, data, aux):
        mu, logvar = aux
        keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(data["inputs"]["key"])
        elbo, (r, s, kl) = jax.vmap(lambda b, m, lv, v, k: self.elbo_loss(params, b, m, lv, v, k))(
            data["batch"], mu, logvar, data["batch"]["valid"], keys)
        return self.config.elbo_coef * jnp.mean(elbo), {"reward_decoding_loss": jnp.mean(r), "state_decoding_loss": jnp.mean(s),
                                                        "kl": jnp.mean(kl)}
