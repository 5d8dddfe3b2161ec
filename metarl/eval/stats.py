"""Summary statistics of evaluation returns: means with 95% t-intervals, curves and regret.

Inputs are the arrays `metarl.eval.evaluate` returns, `returns[task, episode]`, or several of them
stacked over training seeds, `returns[seed, task, episode]`.

Which interval (the one rule for all numbers metarl reports):

- `[task, episode]`: a Student-t 95% interval over tasks, `mean +- t(0.975, T-1) * sd / sqrt(T)`
  with the sample standard deviation (ddof=1). Tasks are independent draws of the family's
  distribution, so this is the interval Duan et al.'s "averaged over 1000 tasks" numbers call for.
- `[seed, task, episode]` with S >= 2 seeds: the point estimate is the mean over all seeds x tasks;
  the interval is a t-interval over the S per-seed means (S-1 degrees of freedom), the clustered
  interval: it counts both task-to-task and seed-to-seed (training) variation, where pooling all
  S*T totals as if independent would hide the latter. `pooled=True` gives the pooled interval over
  the S*T totals instead. With S == 1 both equal the interval over tasks.

With a single sample (T == 1, or S == 1 and T == 1) the interval is (mean, mean): there is nothing
to estimate a spread from, and we say so rather than return NaN.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats as _scipy_stats

from metarl.errors import ConfigError

__all__ = ["Interval", "t_interval", "total_return", "episode_curve", "regret", "as_seed_task_episode"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean and its 95% confidence interval [low, high], from `n` samples."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def to_json(self) -> dict:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n}


def t_interval(samples, confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval of 1-D `samples` (independent draws)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ConfigError("t_interval: no samples")
    if not np.all(np.isfinite(x)):
        raise ConfigError("t_interval: samples contain NaN or infinity")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean, 1)
    sem = float(x.std(ddof=1)) / np.sqrt(x.size)
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * sem
    return Interval(mean, float(mean - half), float(mean + half), int(x.size))


def as_seed_task_episode(returns) -> np.ndarray:
    """View `returns[task, episode]` or `returns[seed, task, episode]` as [seed, task, episode]."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 2:
        return r[None]
    if r.ndim == 3:
        return r
    raise ConfigError(f"returns must be [task, episode] or [seed, task, episode], got shape {r.shape}")


def _interval_seed_task(values: np.ndarray, pooled: bool) -> Interval:
    """Interval of `values[seed, task]` by the module's rule."""
    seeds, tasks = values.shape
    if seeds == 1:
        return t_interval(values[0])
    if pooled:
        return t_interval(values.reshape(-1))
    per_seed = t_interval(values.mean(axis=1))
    # the clustered interval; its point estimate is the grand mean (equal to the mean of seed means)
    return Interval(float(values.mean()), per_seed.low, per_seed.high, seeds * tasks)


def total_return(returns, pooled: bool = False) -> Interval:
    """Mean total return of a trial (sum over episodes) with its 95% interval."""
    r = as_seed_task_episode(returns)
    return _interval_seed_task(r.sum(axis=2), pooled)


def episode_curve(returns, pooled: bool = False) -> list[Interval]:
    """The in-context learning curve: for each episode index, the mean return and its interval."""
    r = as_seed_task_episode(returns)
    return [_interval_seed_task(r[:, :, e], pooled) for e in range(r.shape[2])]


def regret(returns, oracle_returns, pooled: bool = False) -> Interval:
    """Regret against the Oracle: oracle total minus agent total, per task, averaged.

    `oracle_returns` is [task, episode] (broadcast over the agent's seeds) or has the agent's shape.
    Both must come from the same tasks in the same order (and, for lower variance, the same
    evaluation key, which `run_baselines` ensures)."""
    r = as_seed_task_episode(returns)
    o = as_seed_task_episode(oracle_returns)
    if o.shape[1:] != r.shape[1:] or o.shape[0] not in (1, r.shape[0]):
        raise ConfigError(f"regret: oracle returns {o.shape} do not match the agent's {r.shape}")
    return _interval_seed_task(o.sum(axis=2) - r.sum(axis=2), pooled)
