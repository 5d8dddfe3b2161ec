"""The Bayes-optimal ceiling of the RL² bandit tables' 10-pull settings, beside the published numbers
and ours.

No agent can beat the Bayes-optimal agent's expected total reward on the task distribution, so a
1000-task mean above it is sampling noise. This script solves the 10-pull Bernoulli bandits
(k = 5, 10, 50 arms, uniform prior) exactly (`metarl.baselines.bayes_optimal`) and reports each
published number and our RL² (from `benchmarks/results/rl2.json`) against it, in units of the
standard error of a 1000-task mean of the optimal agent.

    python -m benchmarks.bandit_bayes_optimal

Writes benchmarks/results/bandit_bayes_optimal.{md,json}. The 100-pull settings are out of reach of
exact dynamic programming (billions of belief states) and are not included.
"""

from __future__ import annotations

import json
import os
import platform
import time

from benchmarks.reference_tables import bandit_reference  # noqa: E402

from metarl.baselines.bayes_optimal import bernoulli_bayes_optimal  # noqa: E402
from metarl.run.folder import write_json_atomic  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SETTINGS = [(10, 5), (10, 10), (10, 50)]  # (pulls, arms)
TASKS = 1000
COLUMNS = ["RL² GRU paper", "RL² GRU re-impl", "SNAIL paper", "SNAIL re-impl", "Gittins", "UCB1"]


def ours(pulls, arms):
    """Our best RL² row for the setting in rl2.json and its best baseline on the same tasks."""
    path = os.path.join(RESULTS, "rl2.json")
    if not os.path.exists(path):
        return None
    rows = [e for e in json.load(open(path))["entries"].values() if e["setting"] == f"bandit-n{pulls}-k{arms}"]
    if not rows:
        return None
    best = max(rows, key=lambda e: e["rl2"]["mean"])
    return {"rl2": best["rl2"], "preset": best["preset"], "best_baseline": best["our_best_baseline"]}


def main():
    entries = []
    for pulls, arms in SETTINGS:
        start = time.perf_counter()
        r = bernoulli_bayes_optimal(arms, pulls)
        seconds = time.perf_counter() - start
        se = r.std / TASKS**0.5
        published = {c: bandit_reference(pulls, arms, c) for c in COLUMNS}
        entries.append({
            "setting": f"bandit-n{pulls}-k{arms}", "pulls": pulls, "arms": arms, "prior": [1.0, 1.0],
            "bayes_optimal": r.value, "std": r.std, "se_1000_tasks": se, "states": r.states, "seconds": seconds,
            "published": published,
            "published_minus_optimum_in_se": {c: None if v is None else (v - r.value) / se for c, v in published.items()},
            "ours": ours(pulls, arms),
        })
    meta = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "command": "python -m benchmarks.bandit_bayes_optimal",
            "tasks_for_se": TASKS}
    os.makedirs(RESULTS, exist_ok=True)
    write_json_atomic(os.path.join(RESULTS, "bandit_bayes_optimal.json"), {"meta": meta, "entries": entries})

    lines = [
        "# The Bayes-optimal ceiling of the 10-pull bandit settings",
        "",
        f"Produced by `{meta['command']}` on {meta['machine']}. Exact dynamic programming over belief states "
        "(`metarl.baselines.bayes_optimal`): the expected total reward of the Bayes-optimal agent on 10 pulls of k "
        "Bernoulli arms with p ~ U[0, 1], the ceiling of every agent's mean. SE: the standard error of a "
        f"{TASKS}-task mean of that agent (its total's standard deviation / sqrt({TASKS})). Published numbers are "
        "rounded to 0.1; in brackets, their distance from the optimum in SEs. Ours: the best RL² row of "
        "[rl2.md](rl2.md) (3 seeds, 1000 held-out tasks) and our best baseline on the same tasks.",
        "",
        "| setting | Bayes-optimal | SE (1000 tasks) | " + " | ".join(COLUMNS) + " | our RL² | our best baseline | states | time |",
        "|---|---|---|" + "---|" * len(COLUMNS) + "---|---|---|---|",
    ]
    for e in entries:
        cells = []
        for c in COLUMNS:
            v = e["published"][c]
            cells.append("—" if v is None else f"{v:.1f} ({e['published_minus_optimum_in_se'][c]:+.1f})")
        o = e["ours"]
        if o is None:
            mine, base = "not run", "—"
        else:
            m = o["rl2"]
            mine = (f"{m['mean']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}] ({o['preset']}; "
                    f"{(m['mean'] - e['bayes_optimal']) / e['se_1000_tasks']:+.1f})")
            base = f"{o['best_baseline']['name']} {o['best_baseline']['mean']:.2f}"
        lines.append(f"| {e['setting']} | {e['bayes_optimal']:.3f} | {e['se_1000_tasks']:.3f} | " + " | ".join(cells)
                     + f" | {mine} | {base} | {e['states']:,} | {e['seconds']:.2f} s |")
    lines.append("")
    with open(os.path.join(RESULTS, "bandit_bayes_optimal.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
