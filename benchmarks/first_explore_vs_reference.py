"""First-Explore per update, ours against the public reference (btnorman/First-Explore), on the
same setting: the 10-armed deceptive bandit (arm 0 fixed at 0.5, the others ~ N(0, 1) with
reward noise 0.5), n = 20 explore pulls, 128 tasks per update, the reference network's size
(hidden 128, 3 layers, 4 heads), the bandit rule (on-policy, 5% random actions, an exploit pull
is imitated when it reaches the best explore reward in its context), AdamW (clip 0.25, weight
decay 1e-4) with the same schedule on both sides: a linear warm-up over the first 10% of the
run's updates to `--lr`, then a linear decay to 0 at the run's end (the reference's own
schedule warms up over 20k of 200k updates, which would leave lr ~ 0 in a run of this length).

The metric, per update: the exploit policy's mean reward per pull over the update's rollouts,
exploit pulls with contexts of 1..n explore pulls (ours: `exploit_return`; the reference: the
mean of its exploit rewards at contexts 1..n; it also samples one at context 0, left out).
Random pulls score 0.05, the safe arm 0.5, the best arm of a 20-pull random context about 1.

The reference runs in its own virtual environment (`--reference-dir DIR` holding `venv/` and the
edited tree `src/`, see the results file for the edits), as a subprocess whose per-update
`FE_METRIC update=... exploit_per_pull=...` lines are parsed; `--reference-log FILE` parses a log
of such a run instead; with neither, the reference curve already in the JSON is kept.

    python -m benchmarks.first_explore_vs_reference [--updates 1000] [--variants NAME ...]
        [--reference-dir /tmp/fe_ref | --reference-log FILE]

Writes benchmarks/results/first_explore_vs_reference.md, .json and .png (variants not run this
time keep their earlier curves).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time

import jax
import numpy as np

import metarl
from metarl.algos.first_explore import PRESETS, FirstExplore
from metarl.run.folder import write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
NAME = "first_explore_vs_reference"
CHUNK = 50
#: ours, on the reference run's settings ("reference" preset) with these network/loss options
VARIANTS = {
    "ours (episode layout, 2 heads)": dict(layout="episode", complementary_heads=False),
    "ours + complementary heads (A1)": dict(layout="episode", complementary_heads=True),
    "ours, one token per pull (A4-A6)": dict(layout="pull", complementary_heads=False),
    "ours reference-bandit (A1 + A4-A6)": dict(layout="pull", complementary_heads=True),
}
REFERENCE = "reference (btnorman/First-Explore, edited to run)"
CHECKPOINTS = (100, 250, 500, 750, 1000, 1500, 2000)
WINDOW = 50  #: the table's values: mean of the per-update metric over the last WINDOW updates
METRIC = re.compile(r"FE_METRIC update=(\d+) exploit_per_pull=([-\d.e]+) .*?exploit_last=([-\d.e]+) .*?elapsed=([\d.]+)")
REFERENCE_EDITS = [
    "E1 `lte_code/bandit.py`: `import brax` / `brax.jumpy` / `brax.envs.env` (brax is pinned to a git commit that cannot be "
    "installed here) replaced by a stand-in `env.Env = object` and a `flax.struct` `env.State` with the fields the bandit uses "
    "(qp, obs, reward, done, metrics, info), `jp` = `jax.numpy`.",
    "E2 `bandit_runs/bandit_first-explore.py`: `prep_args` (SLURM array index) removed; `script_setting` fixed to 10 arms, "
    "`pulls` = n + 1 (SEQ_LEN: n explore pulls, exploit contexts 0..n), batch 128, 'mean' bandit (arm 0 = 0.5), seed from the "
    "environment, and the key `'new_explore': False` added (the published script reads it as a default argument and would raise "
    "KeyError; it is unused).",
    "E3: `num_training_steps` = the run's updates (was 1000 x 200) and the schedule's peak lr from the environment (was 1e-4); "
    "warm-up ratio 0.1 and the linear decay unchanged.",
    "E4: the exploit rewards, computed inside the loss and discarded, are passed out through the `has_aux` outputs of "
    "`explore_train` -> `explore_train_loit_grad` -> `explore_losses_and_grads` -> `train_e_step`, which returns their mean "
    "over contexts 1..n, over contexts 0..n and at context n (no change to the losses or gradients).",
    "E5: the main loop (wandb, pickle checkpoints, plots) replaced by a `jax.lax.scan` of `train_e_step` in chunks of 50 "
    "updates, printing one `FE_METRIC` line per update.",
]
REFERENCE_ENV = ("Python 3.11.7 venv outside the repo; pinned jax 0.3.25 / flax 0.6.2 / optax 0.1.4 have no Python 3.11 "
                 "wheels, so: jax and jaxlib 0.4.13 (CPU), flax 0.7.2, optax 0.1.7, chex 0.1.82, numpy 1.26.4, scipy 1.11.4, "
                 "transformers 4.24.0 (as pinned), tokenizers 0.13.3; matplotlib (unused after E5). "
                 "Newer jax (0.4.30) fails in transformers 4.24/4.30 (`jnp.DeviceArray` removed). Set up as: "
                 "`python3.11 -m venv REF_DIR/venv`; `git archive` of the reference's HEAD (lte_code/, bandit_runs/) into REF_DIR/src; "
                 "`REF_DIR/venv/bin/pip install jax==0.4.13 jaxlib==0.4.13 flax==0.7.2 optax==0.1.7 chex==0.1.82 numpy==1.26.4 "
                 "scipy==1.11.4 transformers==4.24.0 ml_dtypes==0.2.0 orbax-checkpoint==0.3.5 matplotlib`; then the edits below.")


def our_config(updates, lr, episodes, overrides):
    return dataclasses.replace(PRESETS["reference"], total_updates=updates, lr=lr, **overrides)


def run_ours(label, overrides, env, episodes, updates, lr, seed):
    config = our_config(updates, lr, episodes, overrides)
    algo = FirstExplore(env, episodes, config)
    state = algo.init(jax.random.PRNGKey(seed))

    @jax.jit
    def chunk(s):
        def body(s, _):
            s, m = algo.update(s)
            return s, (m["exploit_return"], m["final_exploit_return"])

        return jax.lax.scan(body, s, None, length=CHUNK)

    start = time.perf_counter()
    per_pull, last, elapsed = [], [], []
    for c in range(updates // CHUNK):
        state, (a, b) = chunk(state)
        per_pull += np.asarray(a).tolist()
        last += np.asarray(b).tolist()
        elapsed.append(time.perf_counter() - start)
        print(f"  {label}: {len(per_pull)} updates, exploit/pull (last {CHUNK}) {np.mean(per_pull[-CHUNK:]):.3f}, {elapsed[-1]:.0f} s", flush=True)
    return {"per_update": per_pull, "after_last_explore": last, "seconds": elapsed[-1],
            "seconds_per_update_after_first_chunk": (elapsed[-1] - elapsed[0]) / max(updates - CHUNK, 1),
            "seed": seed, "config": dataclasses.asdict(config)}


def parse_reference(lines):
    per_pull, last, elapsed = [], [], []
    for line in lines:
        m = METRIC.search(line)
        if m:
            assert int(m.group(1)) == len(per_pull) + 1, line
            per_pull.append(float(m.group(2)))
            last.append(float(m.group(3)))
            elapsed.append(float(m.group(4)))
    if not per_pull:
        sys.exit("no FE_METRIC lines in the reference's output")
    first_chunk = elapsed[CHUNK - 1] if len(elapsed) >= CHUNK else elapsed[0]
    return {"per_update": per_pull, "after_last_explore": last, "seconds": elapsed[-1],
            "seconds_per_update_after_first_chunk": (elapsed[-1] - first_chunk) / max(len(elapsed) - CHUNK, 1)}


def reference_command(ref_dir, episodes, updates, lr, seed):
    return (f"cd {ref_dir}/src/bandit_runs && FE_SEQ_LEN={episodes + 1} FE_SEED={seed} FE_UPDATES={updates} FE_LR={lr} "
            f"FE_CHUNK={CHUNK} {ref_dir}/venv/bin/python bandit_first-explore.py")


def window_mean(curve, at):
    if len(curve) < at:
        return None
    return float(np.mean(curve[at - WINDOW: at]))


def plot(results, path, updates):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, r in results.items():
        y = np.asarray(r["per_update"])
        x = np.arange(1, len(y) + 1)
        smooth = np.convolve(y, np.ones(WINDOW) / WINDOW, mode="valid")
        line, = ax.plot(x[WINDOW - 1:], smooth, label=label, lw=2 if label == REFERENCE else 1.3)
        ax.plot(x, y, color=line.get_color(), alpha=0.15, lw=0.6)
    ax.axhline(0.05, color="grey", ls=":", lw=0.8)
    ax.axhline(0.5, color="grey", ls="--", lw=0.8)
    ax.text(updates, 0.05, " random", va="center", fontsize=8)
    ax.text(updates, 0.5, " safe arm", va="center", fontsize=8)
    ax.set_xlabel("update")
    ax.set_ylabel(f"exploit reward per pull (mean of {WINDOW} updates; faint: per update)")
    ax.set_title("First-Explore, 10-armed deceptive bandit, n = 20, 128 tasks/update")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=20, help="explore pulls n (the reference's SEQ_LEN is n + 1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr of the warm-up/decay schedule, both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"which of ours to run: {list(VARIANTS)} (none: [])")
    parser.add_argument("--reference-dir", help="a folder with venv/ and the edited src/ of the reference: run it")
    parser.add_argument("--reference-log", help="parse this log of a reference run instead of running it")
    parser.add_argument("--fresh", action="store_true", help="discard stored curves of another setting (else: refuse)")
    args = parser.parse_args()
    if args.updates < CHUNK or args.updates % CHUNK:
        sys.exit(f"--updates must be a positive multiple of {CHUNK}")
    for v in args.variants:
        if v not in VARIANTS:
            sys.exit(f"unknown variant {v!r}; choose from {list(VARIANTS)}")
    path_json = os.path.join(RESULTS, NAME + ".json")
    old = json.load(open(path_json)) if os.path.exists(path_json) else {}
    setting = {"updates": args.updates, "episodes": args.episodes, "lr": args.lr}
    if old.get("results") and old.get("setting") != setting and not args.fresh:
        sys.exit(f"{path_json} holds curves of another setting {old.get('setting')}; pass --fresh to replace them")
    results = {k: v for k, v in old.get("results", {}).items()} if old.get("setting") == setting else {}
    commands = dict(old.get("commands", {})) if results else {}
    env = metarl.make("fixed-arm-bandit", arms=10, fixed_mean=0.5)

    ref_cmd = reference_command(args.reference_dir or "REF_DIR", args.episodes, args.updates, args.lr, args.seed)
    if args.reference_dir:
        print("reference:", ref_cmd, flush=True)
        proc = subprocess.run(ref_cmd, shell=True, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
        results[REFERENCE] = {**parse_reference(proc.stdout.splitlines()), "seed": args.seed}
        commands[REFERENCE] = ref_cmd
    elif args.reference_log:
        results[REFERENCE] = {**parse_reference(open(args.reference_log).read().splitlines()), "seed": args.seed}
        commands[REFERENCE] = ref_cmd
    for variant in args.variants:
        label = variant if args.seed == 0 else f"{variant} [seed {args.seed}]"
        results[label] = run_ours(label, VARIANTS[variant], env, args.episodes, args.updates, args.lr, args.seed)
        commands[label] = (f"python -m benchmarks.first_explore_vs_reference --updates {args.updates} --episodes {args.episodes} "
                           f"--lr {args.lr} --seed {args.seed} --variants '{variant}'")
    order = [REFERENCE] + list(VARIANTS)
    results = {k: results[k] for k in sorted(results, key=lambda k: (order.index(k.split(" [seed")[0]), k))}
    out = {"setting": setting, "machine": f"{os.cpu_count()}-core {platform.machine()} CPU (shared with other jobs)",
           "jax": jax.__version__, "family": "fixed-arm-bandit", "options": {"arms": 10, "fixed_mean": 0.5},
           "commands": commands, "reference_edits": REFERENCE_EDITS, "reference_environment": REFERENCE_ENV,
           "window": WINDOW, "results": results}
    os.makedirs(RESULTS, exist_ok=True)
    write_json_atomic(path_json, out)
    plot(results, os.path.join(RESULTS, NAME + ".png"), args.updates)
    write_markdown(out)


def write_markdown(out):
    s, results = out["setting"], out["results"]
    points = [c for c in CHECKPOINTS if c <= s["updates"]]
    lines = [
        "# First-Explore per update: ours vs the reference (10-armed deceptive bandit)",
        "",
        f"Setting (both sides): 10 arms, arm 0 fixed at 0.5, others ~ N(0, 1), reward noise 0.5; n = {s['episodes']} explore pulls; "
        f"128 tasks per update; hidden 128, 3 layers, 4 heads; bandit rule (on-policy, 5% random actions, unweighted, best explore "
        f"reward in context); AdamW, clip 0.25, weight decay 1e-4; lr: linear warm-up over the first 10% of the {s['updates']} updates "
        f"to {s['lr']:g}, then linear decay to 0 at update {s['updates']} (the same on both sides). One seed each (seed stated below).",
        "",
        f"Metric: exploit reward per pull over the update's rollouts (exploit contexts 1..n), shown as the mean over the {WINDOW} "
        f"updates ending at the update named (per-update values in the JSON). Random 0.05, safe arm 0.5, best arm of a random "
        f"{s['episodes']}-pull context about 1. 'After last explore': the exploit pull whose context is all n explore pulls. "
        f"Plot: [{NAME}.png]({NAME}.png).",
        "",
        "| run | seed | " + " | ".join(f"upd {p}" for p in points) + f" | after last explore, upd {s['updates']} | wall s | s/update |",
        "|---|---|" + "---|" * (len(points) + 3),
    ]
    for label, r in results.items():
        cells = [window_mean(r["per_update"], p) for p in points]
        last = window_mean(r["after_last_explore"], s["updates"])
        lines.append(f"| {label} | {r.get('seed', 0)} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells)
                     + f" | {last:.3f} | {r['seconds']:.0f} | {r['seconds_per_update_after_first_chunk']:.2f} |")
    lines += [
        "",
        f"Wall times on {out['machine']} (JAX {out['jax']} for ours), compilation included; s/update excludes the first chunk of "
        f"{CHUNK} updates (compilation). The two sides ran at different times on a machine shared with other jobs, so the times "
        "are rough.",
        "",
        "## Commands",
        "",
    ]
    lines += [f"- {label}: `{cmd}`" for label, cmd in out["commands"].items()]
    lines += ["", "## The reference's environment and edits", "", out["reference_environment"], ""]
    lines += [f"- {e}" for e in out["reference_edits"]]
    with open(os.path.join(RESULTS, NAME + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
