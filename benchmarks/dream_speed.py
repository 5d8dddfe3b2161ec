"""DREAM's training speed on `distraction`: our env steps per second beside the reference
implementation's (ezliu/dream, PyTorch), measured in the same invocation on this machine.

Ours: `dream` on distraction (one exploration and one exploitation episode per trial, the preset
DREAM chooses there), `--seeds` seeds vmapped; the rate is env steps (both episodes, all seeds) per second of
training after the first chunk (compilation excluded), over `--updates` updates.

The reference (optional, `--reference DIR`): DIR holds the reference source and a virtual
environment `DIR/venv` it runs in. Its pins (torch 1.4, gym 0.16, numpy 1.18) do not install on
Python 3.11; the smallest changes that make it run, used for the published numbers: torch 2.13
(CPU), gym 0.16.0, numpy 1.26; `np.int` -> `int` (envs/city.py, grid.py, cooking.py, embed.py);
main.py: `git.Repo()` wrapped in try/except (an exported tree is not a git work tree), a print
`TIMING step=.. time=.. env_steps=..` every 10 episodes, and `DREAM_NO_EVAL=1` skipping its
periodic evaluation (100 rendered test episodes at step 0 take about 10 minutes). It runs
`main.py dream -b environment="distraction"` for `--reference-seconds`; the rate is (env steps at
the last TIMING line - at the first) / (seconds between them). In its first 8,000 exploration steps
only its exploitation agent trains (the explorer's replay warm-up), so a short run measures an
upper bound of its training speed.

    python -m benchmarks.dream_speed [--reference /tmp/dream_ref] [--reference-seconds 200] [--seeds 1]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time

import jax
import jax.numpy as jnp

from benchmarks import common

import metarl
from metarl import algos
from metarl.run.loop import init_states, run_chunk
from metarl.run.settings import init_keys

TIMING = re.compile(r"TIMING step=(\d+) time=([\d.]+) env_steps=(\d+)")


def ours(seeds: int, updates: int) -> dict:
    algo = algos.make("dream", metarl.make("distraction"), 2, preset="default", lr_decay_updates=0)  # the schedule does not change the cost
    state = init_states(algo, init_keys(0, seeds))
    start = time.perf_counter()
    state, sums, _ = run_chunk(algo, state, jnp.int32(1))
    jax.block_until_ready(sums)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, sums, _ = run_chunk(algo, state, jnp.int32(updates))
    jax.block_until_ready(sums)
    seconds = time.perf_counter() - start
    steps = updates * algo.steps_per_update * seeds
    return {"preset": algo.default_preset(algo.env)[0], "exploit_learner": algo.config.exploit_learner, "seeds": seeds, "updates": updates, "env_steps": steps, "seconds": seconds, "first_chunk_seconds": compile_s,
            "env_steps_per_second": steps / seconds}


def reference(directory: str, seconds: int) -> dict:
    env = {**os.environ, "DREAM_NO_EVAL": "1"}
    command = ["timeout", str(seconds), os.path.join(directory, "venv", "bin", "python"), "main.py", "speed", "-b",
               'environment="distraction"', "-f"]
    proc = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    lines = [(int(a), float(b), int(c)) for a, b, c in TIMING.findall(proc.stdout + proc.stderr)]
    if len(lines) < 2:
        raise SystemExit(f"the reference printed fewer than two TIMING lines (exit {proc.returncode}); its output ends:\n"
                         + (proc.stdout + proc.stderr)[-2000:])
    (_, t0, s0), (_, t1, s1) = lines[0], lines[-1]
    return {"command": " ".join(command), "cwd": directory, "episodes": lines[-1][0], "env_steps": s1 - s0, "seconds": t1 - t0,
            "env_steps_per_second": (s1 - s0) / (t1 - t0)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="the reference's directory (with venv/); omitted: ours alone, set beside the "
                        "reference's rate from the results file's earlier side-by-side run (named as such)")
    parser.add_argument("--reference-seconds", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args(argv)
    data = {"meta": common.machine()}
    earlier = common.read_json(os.path.join(common.RESULTS, "dream_speed.json")) or {}
    if args.reference:
        data["reference"] = reference(args.reference, args.reference_seconds)
    elif "reference" in earlier:  # measured in an earlier invocation, side by side with our code of then
        # what it was measured beside: kept from the invocation that ran it, not the last one's
        first = earlier["reference"].get("earlier")
        data["reference"] = {**earlier["reference"], "earlier": True,
                             "measured_with": earlier["reference"]["measured_with"] if first else earlier.get("meta"),
                             "ours_then": earlier["reference"]["ours_then"] if first else earlier.get("ours")}
    data["ours"] = ours(args.seeds, args.updates)
    data["meta_after"] = common.machine()
    o = data["ours"]
    rows = [[f"metarl dream ({o['preset']}: {o['exploit_learner'].upper()} exploitation, jitted)", f"{o['seeds']}", f"{o['env_steps']:,}", f"{o['seconds']:.1f}", f"{o['env_steps_per_second']:,.0f}"]]
    if "reference" in data:
        r = data["reference"]
        name = "reference (PyTorch DQN, early phase)" + (", measured in an earlier invocation" if r.get("earlier") else "")
        rows.append([name, "1", f"{r['env_steps']:,}", f"{r['seconds']:.1f}", f"{r['env_steps_per_second']:,.1f}"])
        data["ratio"] = o["env_steps_per_second"] / r["env_steps_per_second"]
    md = ["# DREAM training speed on distraction", "", "Produced by `benchmarks/dream_speed.py` (see its docstring for the reference's changes).",
          f"Machine: {data['meta']['machine']}, JAX {data['meta']['jax']}; 1-minute load average before / after: "
          f"{data['meta']['load_average_1min']} / {data['meta_after']['load_average_1min']}.", "",
          common.markdown_table(["run", "seeds", "env steps", "seconds", "env steps / s"], rows), ""]
    if "ratio" in data:
        md += [f"Ours / reference: **{data['ratio']:,.0f}x** env steps per second (the reference's rate is from its first "
               f"{data['reference']['episodes']} episodes, before its explorer trains: an upper bound of its speed).", ""]
        if data["reference"].get("earlier"):
            then = data["reference"].get("ours_then") or {}
            md += [f"The reference's rate is the one measured side by side with our code of then "
                   f"({then.get('env_steps_per_second', float('nan')):,.0f} env steps / s, commit "
                   f"{(data['reference'].get('measured_with') or {}).get('commit', '?')}); its installation was not repeated for this run.", ""]
    md += ["Command: `python -m benchmarks.dream_speed" + (f" --reference {args.reference} --reference-seconds {args.reference_seconds}" if args.reference else "")
           + f" --seeds {args.seeds} --updates {args.updates}`", ""]
    common.write_results("dream_speed", data, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
