"""How long `dream_compare`'s whole comparison takes on this machine when nothing else runs: every
family x method row trains with dream_compare's settings (preset "default", 2-episode trials,
`--seeds` vmapped in one process) for `--steps` env steps per seed, one row after another, and its
training time is projected to the comparison's budget (`--budget`, 2M per seed): the first chunk
of updates (which holds the compilation) as measured, the rest at the rate of the later chunks.

dream_compare's own rows record each row's training time, but many of them ran beside another job,
so their sum (in dream.md) is an upper bound; this measures the rows alone, in one session.

    python -m benchmarks.dream_compare_time [FAMILY ...] [--methods dream,e-rl2,import,varibad] [--seeds 3] [--steps 200000]

Written to benchmarks/results/dream_compare_time.{json,md}, merged with the rows already there
(a row timed again replaces its old one; each row keeps the invocation that timed it); scratch run
folders under runs/dream_compare_time/ (removed and retrained on every run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from benchmarks import common
from benchmarks.dream_compare import EPISODES, FAMILIES, METHODS

import metarl
from metarl import algos


def projected_seconds(metrics_path: str, budget: int) -> float:
    """The training seconds projected to `budget` env steps per seed from a run's metrics.jsonl: the
    first chunk as measured (it compiles), the rest at the later chunks' rate."""
    rows = [json.loads(line) for line in open(metrics_path)]
    if len(rows) < 2:
        raise SystemExit(f"{metrics_path}: one chunk only; give more --steps so the rate after compilation can be measured")
    first = rows[0]
    later_seconds = sum(r["chunk_seconds"] for r in rows[1:])
    rate = (rows[-1]["env_steps"] - first["env_steps"]) / later_seconds  # env steps per seed per second
    return first["chunk_seconds"] + max(budget - first["env_steps"], 0) / rate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", default=list(FAMILIES), help=f"families (default: all of {', '.join(FAMILIES)})")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row, vmapped (dream_compare's: 3)")
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per seed to time each row for")
    parser.add_argument("--budget", type=int, default=2_000_000, help="env steps per seed to project each row to")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    for name in args.families:
        if name not in FAMILIES:
            parser.error(f"unknown family {name!r}; one of {', '.join(FAMILIES)}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; one of {', '.join(METHODS)}")
    entries = []
    start = time.perf_counter()
    command = "python -m benchmarks.dream_compare_time " + " ".join(args.families) + f" --methods {','.join(methods)} --seeds {args.seeds} --steps {args.steps} --budget {args.budget}"
    for family in args.families:
        env = metarl.make(family)
        for method in methods:
            algo = algos.make(method, env, EPISODES, preset="default")
            out = os.path.join("runs", "dream_compare_time", family, method)
            shutil.rmtree(out, ignore_errors=True)
            run = common.train_or_resume(algo, out, args.steps, args.seeds)
            projected = projected_seconds(os.path.join(out, "metrics.jsonl"), args.budget)
            measured, steps = run.train_seconds, run.result.env_steps
            entries.append({"family": family, "method": method, "env_steps_per_seed": steps, "train_seconds": measured,
                            "wall_seconds": run.wall_seconds, "projected_train_seconds": projected, "command": command,
                            "seeds": args.seeds, "budget": args.budget, "timed": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
            print(f"  {family} {method}: {steps:,} steps/seed in {measured:.0f} s; {args.budget:,} projected {projected:.0f} s", flush=True)
    old = common.read_json(os.path.join(common.RESULTS, "dream_compare_time.json")) or {}
    timed = {(e["family"], e["method"]) for e in entries}
    kept = [{**e, "command": e.get("command", old.get("command")), "seeds": e.get("seeds", old.get("seeds")),
             "budget": e.get("budget", old.get("budget"))} for e in old.get("rows", []) if (e["family"], e["method"]) not in timed]
    if any(e["seeds"] != args.seeds or e["budget"] != args.budget for e in kept):
        parser.error("the rows already in dream_compare_time.json were timed with other --seeds or --budget; time every row again")
    entries = sorted(kept + entries, key=lambda e: (FAMILIES.index(e["family"]), METHODS.index(e["method"])))
    rows = [[e["family"], e["method"], f"{e['env_steps_per_seed']:,}", f"{e['train_seconds']:.0f}", f"{e['projected_train_seconds']:.0f}",
             e.get("timed", "an earlier session")]
            for e in entries]
    commands = list(dict.fromkeys(e["command"] for e in entries))
    total = sum(e["projected_train_seconds"] for e in entries)
    data = {"meta": common.machine(), "command": command, "commands": commands, "seeds": args.seeds, "steps": args.steps,
            "budget": args.budget, "rows": entries, "projected_total_seconds": total, "session_seconds": time.perf_counter() - start}
    md = "\n".join([
        "# Time of the DREAM comparison, each row alone", "",
        "Produced by " + "; ".join(f"`{c}`" for c in commands) + f" ({data['meta']['machine']}, load "
        f"{data['meta'].get('load_average_1min')} at the end of the last); "
        "do not edit by hand. Each row: dream_compare's settings, "
        f"{args.seeds} seeds vmapped, trained {args.steps:,} env steps per seed with nothing else running; its training time "
        f"projected to {args.budget:,} steps per seed (the first chunk, which compiles, as measured; the rest at the later "
        "chunks' rate). Evaluations during training and the held-out scoring are not counted (dream_compare's train time "
        "does not count them either).", "",
        common.markdown_table(["family", "method", "env steps / seed timed", "train time (s)", f"projected to {args.budget:,} (s)", "timed"], rows), "",
        f"Projected whole comparison ({len(entries)} rows at {args.budget:,} steps per seed): {total:.0f} s = {total / 3600:.2f} h "
        "(the target: under 3 h).", "",
    ])
    common.write_results("dream_compare_time", data, md)
    print(md)


if __name__ == "__main__":
    main()
