"""Short single-seed RL² probes: what limits learning on a setting at our budgets.

Each probe trains one RL² seed for the same number of environment steps, changing one thing from
a preset ("fast-long", or "fast" for 10-step trials), and scores it on held-out tasks (PRNGKey(0))
beside two reference agents on the same tasks ("gap closed" = (RL² - low) / (high - low)). Three
groups:

- `mdp-n10`: why RL² does not learn the tabular MDP (n=10): 10-episode trials of random tabular
  MDPs (10 states, 5 actions, 10 steps per episode, rewards N(mu, 1), mu ~ N(1, 1)), beside Random
  and Greedy. The "1-state" probe keeps everything but gives the MDP a single state: 10 episodes
  of 10 pulls of a 5-armed Gaussian bandit, which checks the multi-step-episode and
  Gaussian-reward machinery apart from the state dimension.
- `bandit-n100-k5`: why RL² plateaus below Gittins on 100 pulls of a 5-armed Bernoulli bandit,
  beside Random and Gittins; each probe's held-out curve also says how soon it passes 78 (the
  time-to-result target).
- `bandit-n10-k5`: whether anything lifts RL² from its 6.58 plateau on 10 pulls of a 5-armed
  Bernoulli bandit (reference 6.7) toward Gittins: a larger batch, a learning-rate decay, a wider
  core, each from the "fast" preset.

    python -m benchmarks.rl2_probe GROUP [PROBE ...] [--steps N] [--tasks 300]

Run folders go to runs/mdp_probe/PROBE, runs/bandit_probe/PROBE and runs/bandit10_probe/PROBE
(rerunning continues them); results to benchmarks/results/rl2_mdp_probe.*, rl2_bandit_probe.* and
rl2_bandit10_probe.*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from benchmarks import common
from benchmarks.common import RESULTS

import metarl
from metarl import algos


@dataclasses.dataclass(frozen=True)
class Group:
    title: str
    family: str
    episodes: int
    low: str  #: the reference agent "gap closed" starts from
    high: str  #: ... and ends at
    runs: str  #: run folders
    results: str  #: results file stem
    default_steps: int
    #: name -> (what it tests, family options, RL² config changes from the `base` preset)
    probes: dict
    target: float | None = None  #: report when the held-out curve first reaches this
    eval_points: int = 3  #: held-out evaluations during each probe
    base: str = "fast-long"  #: the preset the probes change
    decimals: int = 1  #: of the returns in the table


GROUPS = {
    "mdp-n10": Group(
        "RL² on tabular MDPs (n=10): probes", "tabular-mdp", 10, "random", "greedy", "runs/mdp_probe", "rl2_mdp_probe", 900_000,
        {
            "fast-long": ("the preset of rl2.md's mdp-n10 row", {}, {}),
            "separate-nets": ("separate policy and value GRUs (no value gradient in the policy's core)", {}, {"shared": False}),
            "vf-0.05": ("value loss weighted 0.05 in the shared core", {}, {"vf_coef": 0.05}),
            "ent-0.03-lambda-0.9": ("3x the entropy bonus and longer-horizon advantages", {}, {"ent_coef": 0.03, "gae_lambda": 0.9}),
            "gru-256": ("a shared GRU of 256 units instead of 128", {}, {"hidden": 256}),
            "1-state": ("the same trials with one state: a 5-armed Gaussian bandit, 10 episodes of 10 pulls", {"states": 1}, {}),
            "3-states": ("three states instead of ten", {"states": 3}, {}),
            "noiseless-rewards": ("ten states, rewards exactly mu(s, a) (no N(0, 1) noise)", {"reward_noise_std": 0.0}, {}),
            "epochs-16": ("4x the PPO epochs per update (the reference MDP script used 40): more reuse of each sample", {}, {"epochs": 16}),
            "epochs-32": ("8x the PPO epochs per update", {}, {"epochs": 32}),
            "epochs-16-gru-256": ("4x the epochs with a shared GRU of 256 units (the two best changes together)", {}, {"epochs": 16, "hidden": 256}),
        },
    ),
    "bandit-n100-k5": Group(
        "RL² on Bernoulli bandits (n=100, k=5): probes", "bandit", 100, "random", "gittins", "runs/bandit_probe", "rl2_bandit_probe",
        2_000_000,
        {
            "fast-long": ("the preset of rl2.md's bandit-n100-k5 row", {"arms": 5}, {}),
            "gamma-1": ("undiscounted returns over the 100 pulls (exploration's payoff comes late)", {"arms": 5}, {"gamma": 1.0}),
            "gamma-1-lambda-0.7": ("undiscounted, longer-horizon advantages", {"arms": 5}, {"gamma": 1.0, "gae_lambda": 0.7}),
            "gru-256": ("a shared GRU of 256 units instead of 128", {"arms": 5}, {"hidden": 256}),
            "lr-2e-3-decay": ("twice the learning rate, decayed linearly to 0 over the probe", {"arms": 5}, {"lr": 2e-3, "lr_decay_updates": -1}),
            "ent-0.003": ("a third of the entropy bonus", {"arms": 5}, {"ent_coef": 0.003}),
            "gru-256-epochs-8": ("a shared GRU of 256 units with twice the PPO epochs (more reuse of each sample)", {"arms": 5},
                                 {"hidden": 256, "epochs": 8}),
        },
        target=78.0,
        eval_points=8,
    ),
    "bandit-n10-k5": Group(
        "RL² on Bernoulli bandits (n=10, k=5): probes", "bandit", 10, "random", "gittins", "runs/bandit10_probe", "rl2_bandit10_probe",
        2_000_000,
        {
            "fast": ("the preset of rl2.md's bandit-n10-k5 row", {"arms": 5}, {}),
            "batch-48k": ("4x the trials per update (4,800), 4x the minibatches: less gradient noise per update", {"arms": 5},
                          {"steps_per_update": 48_000}),
            "lr-decay": ("the learning rate decayed linearly to 0 over the probe", {"arms": 5}, {"lr_decay_updates": -1}),
            "gru-256": ("a shared GRU of 256 units instead of 128", {"arms": 5}, {"hidden": 256}),
        },
        target=6.7,
        eval_points=5,
        base="fast",
        decimals=2,
    ),
}


def run_probe(group, name, steps, tasks):
    g = GROUPS[group]
    what, options, changes = g.probes[name]
    env = metarl.make(g.family, **options)
    over_probe = changes.get("lr_decay_updates") == -1  # decay over the probe's own number of updates
    config = dataclasses.replace(algos.algorithm_class("rl2").presets[g.base], **{**changes, "lr_decay_updates": 0} if over_probe else changes)
    if over_probe:
        per_update = algos.make("rl2", env, g.episodes, **dataclasses.asdict(config)).steps_per_update
        config = dataclasses.replace(config, lr_decay_updates=-(-steps // per_update))
    algo = algos.make("rl2", env, g.episodes, **dataclasses.asdict(config))
    run = common.train_or_resume(algo, os.path.join(g.runs, name), steps, 1, g.eval_points, tasks, baselines=[g.low, g.high],
                                 command=["python", "-m", "benchmarks.rl2_probe", group, name])
    agents = {a["name"]: a for a in run.summary["agents"]}
    return {
        "probe": name, "tests": what, "family_options": options, "changes": changes, "config": dataclasses.asdict(config),
        "steps": run.result.env_steps, "train_seconds": run.result.train_seconds, "wall_seconds": run.wall_seconds,
        "resumed": run.resumed, "tasks": tasks, "curve": [(c["env_steps"], c["mean"], c["train_seconds"]) for c in run.curve],
        **{k: {"mean": agents[k]["mean_total_return"], "ci95": agents[k]["ci95"]} for k in ("rl2", g.low, g.high)},
    }


def target_cell(curve, target):
    hit = next((c for c in curve if c[1] >= target), None)
    return " not reached |" if hit is None else f" {hit[0]:,}, {hit[2]:.0f} s |"


def markdown(group, data):
    g = GROUPS[group]
    low, high = (n.capitalize() for n in (g.low, g.high))
    lines = [
        f"# {g.title}",
        "",
        f"Produced by `benchmarks/rl2_probe.py {group}` on {data['meta']['machine']} (JAX {data['meta']['jax']}). One seed "
        f"per probe, the same steps each, scored on held-out tasks (PRNGKey(0)) beside {low} and {high} on the same "
        f"tasks (95% t-intervals over tasks). \"gap closed\" = (RL² - {low}) / ({high} - {low}). Each row: "
        f"`python -m benchmarks.rl2_probe {group} PROBE --steps STEPS --tasks TASKS`, training seed 0; training time is "
        "the summed training chunks (evaluation excluded), measured with other jobs sharing the 2 cores.",
        "",
        f"| probe | what it tests | steps | RL² | {low} | {high} | gap closed | held-out curve (steps: mean) | training time |"
        + (f" first >= {g.target:g} (steps, training s) |" if g.target is not None else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if g.target is not None else ""),
    ]
    for name in g.probes:
        e = data["entries"].get(name)
        if e is None:
            continue
        r, lo, hi = e["rl2"], e[g.low], e[g.high]
        gap = (r["mean"] - lo["mean"]) / (hi["mean"] - lo["mean"])
        d = g.decimals
        curve = ", ".join(f"{c[0] // 1000}k: {c[1]:.{d}f}" for c in e["curve"])
        lines.append(f"| {name} | {e['tests']} | {e['steps']:,} | {r['mean']:.{d}f} [{r['ci95'][0]:.{d}f}, {r['ci95'][1]:.{d}f}] | "
                     f"{lo['mean']:.{d}f} | {hi['mean']:.{d}f} | {gap:.0%} | {curve} | {e['train_seconds']:.0f} s |"
                     + (target_cell(e["curve"], g.target) if g.target is not None else ""))
    return "\n".join(lines + [""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("group", choices=sorted(GROUPS))
    parser.add_argument("probes", nargs="*", help="default: all of the group's")
    parser.add_argument("--steps", type=int, default=None, help="per probe (default: the group's)")
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args(argv)
    g = GROUPS[args.group]
    unknown = [p for p in args.probes if p not in g.probes]
    if unknown:
        parser.error(f"unknown probe(s) {unknown} for {args.group}; valid: {', '.join(g.probes)}")
    path = os.path.join(RESULTS, g.results + ".json")
    for name in args.probes or list(g.probes):
        entry = run_probe(args.group, name, args.steps or g.default_steps, args.tasks)
        print(f"{name}: RL² {entry['rl2']['mean']:.1f}, {g.low} {entry[g.low]['mean']:.1f}, {g.high} {entry[g.high]['mean']:.1f}",
              flush=True)
        data = json.load(open(path)) if os.path.exists(path) else {"entries": {}}
        data["meta"] = common.machine()
        data["entries"][name] = entry
        common.write_results(g.results, data, markdown(args.group, data))


if __name__ == "__main__":
    main()
