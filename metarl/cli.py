"""The command line: the only place in metarl that parses arguments.

    metarl list
    metarl train ALGO FAMILY [family options] [algorithm options] --steps N --out DIR [--seeds S] [--resume]
    metarl eval RUN [--tasks T] [--json P] [--plot P]
    metarl baselines FAMILY [family options] --episodes N --tasks T --seed S [--agents a,b] [--json P] [--plot P]

How it is built. The top level is a dispatch table, `COMMANDS` (name -> `Command`), not one tyro
parser: a subcommand's flags depend on the names that follow it (`metarl baselines bandit` has
`--arms`, `metarl baselines tabular-mdp` has `--states`), so each subcommand first reads its
positional names, checks them against the registries (an unknown name is a `ConfigError` whose
one-line message lists the valid names), and only then builds a tyro parser for exactly the flags
that apply. Every flag comes from a dataclass field (its type, default and the `#:` comment or
docstring under it become the flag's type, default and help), so a new task family, baseline or
algorithm config option gets its flag with no change here.

`main(argv)` returns the exit code (0; 2 for bad input: a `ConfigError`'s message on one line of
stderr, no traceback), so tests call it in-process.

Adding a subcommand: decorate `fn(args: list[str]) -> int` with `@command(name, summary, usage=...,
example=...)`, read positional names with `take_names`, build flags with `fields_to_flags` and parse
them with `parse_flags` (see `train_command` below, which adds the family's, the algorithm config's
and the host loop's flags).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from typing import Any, Callable, Sequence

from metarl.errors import ConfigError, MetarlError

__all__ = ["COMMANDS", "Command", "command", "flag", "fields_to_flags", "field_docs", "parse_flags", "pick", "take_names", "main"]

PROG = "metarl"

OVERVIEW = """\
metarl: meta-reinforcement learning in JAX. Agents that learn, across a distribution of tasks
(Bernoulli bandits, random tabular MDPs, ...), how to explore and exploit a new task within a
trial of a few episodes; classical baselines (UCB1, Thompson sampling, Gittins, PSRL, ...) scored
on the same tasks with the same evaluator."""


# ---------------------------------------------------------------------------------------------
# the dispatch table
@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    summary: str  #: one line, shown by `metarl --help`
    usage: str
    example: str
    run: Callable[[list[str]], int]  #: takes the arguments after the command name, returns the exit code


#: name -> Command, in the order `metarl --help` lists them
COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str, usage: str, example: str):
    """Decorator: register `fn(args) -> exit code` as the subcommand `name`."""

    def deco(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} defined twice")
        COMMANDS[name] = Command(name, summary, usage, example, fn)
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# dataclass fields -> flags (reusable for families, baselines' hyperparameters, algorithm configs)
@dataclasses.dataclass(frozen=True)
class Flag:
    """One `--name VALUE` flag: its Python type, default (`dataclasses.MISSING`: required) and help."""

    name: str
    type: Any
    default: Any
    help: str
    metavar: str | None = None


def flag(name: str, type_: Any, default: Any, help: str, metavar: str | None = None) -> Flag:
    return Flag(name, type_, default, help, metavar)


def field_docs(cls: type) -> dict[str, str]:
    """Documentation of each dataclass field of `cls` (and its bases): the `#:` or `#` comment on
    the field's line, or a string literal right under it (CleanRL's style)."""
    docs: dict[str, str] = {}
    for klass in reversed(inspect.getmro(cls)):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # built at run time, no source: no help text
            continue
        comments = {}
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").lstrip(":").strip()
        body = ast.parse(source).body[0].body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
                after = body[i + 1] if i + 1 < len(body) else None
                if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                    docs[name] = " ".join(after.value.value.split())
                elif node.end_lineno in comments:
                    docs[name] = comments[node.end_lineno]
    return docs


def fields_to_flags(cls: type, skip: Sequence[str] = ()) -> list[Flag]:
    """One flag per init field of the dataclass `cls` (a family, a baseline, an algorithm config):
    its resolved type annotation, its default (required when it has none) and its doc as help."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append(Flag(f.name, hints.get(f.name, str), default, docs.get(f.name, "")))
    return out


def pick(values: dict[str, Any], flags: Sequence[Flag]) -> dict[str, Any]:
    """The entries of parsed `values` that belong to `flags` (e.g. the family's options)."""
    return {f.name: values[f.name] for f in flags}


def parse_flags(args: Sequence[str], flags: Sequence[Flag], prog: str, description: str) -> dict[str, Any]:
    """Parse `args` (flags only) with tyro into {flag name: value}. `--help` prints the help
    (description, then every flag with its type, default and doc) and exits 0; a malformed value or
    an unknown flag prints tyro's message and exits 2 (SystemExit, caught by `main`)."""
    import tyro

    seen: set[str] = set()
    for f in flags:
        if f.name in seen:
            raise ValueError(f"{prog}: two flags named --{f.name}")  # a programming error, not user input
        seen.add(f.name)
    required = [f for f in flags if f.default is dataclasses.MISSING]
    optional = [f for f in flags if f.default is not dataclasses.MISSING]
    spec = []
    for f in required + optional:  # dataclasses want fields without defaults first
        annotated = typing.Annotated[f.type, tyro.conf.arg(help=f.help or None, metavar=f.metavar)]
        if f.default is dataclasses.MISSING:
            spec.append((f.name, annotated))
        else:
            spec.append((f.name, annotated, dataclasses.field(default=f.default)))
    cls = dataclasses.make_dataclass("Flags", spec, frozen=True)
    parsed = tyro.cli(cls, args=list(args), prog=prog, description=description)
    return {f.name: getattr(parsed, f.name) for f in flags}


def take_names(args: Sequence[str], what: Sequence[str], check: Sequence[Callable[[str], Any]]) -> tuple[list[str], list[str]]:
    """Split leading positional names (e.g. ALGO, FAMILY) off `args`, validating each with its
    registry lookup (which raises `ConfigError` listing the valid names). Returns (names, rest)."""
    names = []
    for i, (label, lookup) in enumerate(zip(what, check)):
        if i >= len(args) or args[i].startswith("-"):
            raise ConfigError(f"missing {label} (see --help)")
        lookup(args[i])
        names.append(args[i])
    return names, list(args[len(names):])


def _wants_help(args: Sequence[str]) -> bool:
    return not args or args[0] in ("-h", "--help")


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=200)  # pipes and files: do not wrap rows
    return console


def _describe(cmd_name: str, *paragraphs: str) -> str:
    """A subcommand's help text: its paragraphs wrapped to 100 columns, then its example."""
    text = "\n\n".join(textwrap.fill(p, 100) for p in paragraphs)
    return f"{text}\n\nexample:\n  {COMMANDS[cmd_name].example}"


# ---------------------------------------------------------------------------------------------
# metarl list
@command(
    "list",
    "List task families (with options and defaults), baselines and algorithms.",
    usage="metarl list",
    example="metarl list",
)
def list_command(args: list[str]) -> int:
    from metarl import algos, baselines, envs

    description = _describe(
        "list",
        "List what metarl can run: every task family with its options (the flags of `metarl baselines "
        "FAMILY`) and their defaults, every baseline with the families it applies to, and every training "
        "algorithm.",
    )
    parse_flags(args, [], prog="metarl list", description=description)
    console = _console()
    console.print("[bold]task families[/bold] (options with defaults)")
    for name in envs.names():
        opts = " ".join(f"--{f.name.replace('_', '-')} {f.default}" for f in fields_to_flags(envs.family_class(name)))
        console.print(f"  {name:<18} {opts}")
    console.print("[bold]baselines[/bold] (families they apply to)")
    for name in baselines.names():
        console.print(f"  {name:<18} {', '.join(baselines.families(name))}")
    console.print("[bold]algorithms[/bold]")
    for name in algos.names() or ["(none yet)"]:
        console.print(f"  {name}")
    return 0


# ---------------------------------------------------------------------------------------------
# metarl baselines FAMILY ...
_BASELINES_TEXT = (
    "Evaluate classical baselines (Random, UCB1, Thompson sampling, Gittins, PSRL, the Oracle that knows "
    "the task, ...) on T tasks of a task family, every agent on the same tasks, one trial of N episodes "
    "each (for bandits an episode is one pull, so N is the number of pulls). Prints each agent's mean "
    "total return with a 95% t-interval over tasks, its regret against the Oracle (oracle total minus "
    "agent total, per task) and its compile and run time; --json and --plot also write the summary "
    "and the per-episode return curve. Family options are the family's own: see `metarl list`."
)


def _baselines_common_flags() -> list[Flag]:
    return [
        flag("episodes", int, 10, "n, episodes per trial (pulls, for bandits)", "N"),
        flag("tasks", int, 1000, "number of tasks sampled, every agent on the same ones", "T"),
        flag("seed", int, 0, "tasks are env.sample_tasks(PRNGKey(seed), T)", "S"),
        flag("agents", str | None, None, "comma-separated subset of baselines (None: all that apply)", "A,B,..."),
        flag("json", str | None, None, "write the summary as JSON to this path", "PATH"),
        flag("markdown", str | None, None, "write the table as Markdown to this path", "PATH"),
        flag("plot", str | None, None, "write the per-episode return curves as PNG to this path", "PATH"),
    ]


@command(
    "baselines",
    "Evaluate every applicable baseline on one task family; print the table.",
    usage="metarl baselines FAMILY [family options] --episodes N --tasks T --seed S [--agents A,B] [--json PATH] [--plot PATH]",
    example="metarl baselines bandit --arms 5 --episodes 10 --tasks 1000 --json out/bandit.json --plot out/bandit.png",
)
def baselines_command(args: list[str]) -> int:
    from metarl import baselines, envs
    from metarl.eval import report

    common = _baselines_common_flags()
    if _wants_help(args):
        families = ", ".join(envs.names())
        description = _describe(
            "baselines",
            _BASELINES_TEXT,
            f"FAMILY is one of: {families}. `metarl baselines FAMILY --help` also lists that family's options.",
        )
        parse_flags(["--help"], common, prog="metarl baselines FAMILY", description=description)
        return 0
    (family,), rest = take_names(args, ["FAMILY"], [envs.family_class])
    family_flags = fields_to_flags(envs.family_class(family))
    description = _describe("baselines", _BASELINES_TEXT, f"Baselines for {family}: {', '.join(baselines.names(family))}.")
    values = parse_flags(rest, family_flags + common, prog=f"metarl baselines {family}", description=description)

    env = envs.make(family, **pick(values, family_flags))
    names = [n.strip() for n in (values["agents"] or "").split(",") if n.strip()] or None
    if names is not None and report.ORACLE in baselines.names(family) and report.ORACLE not in names:
        names.append(report.ORACLE)  # the reference for the regret column
    status = _console(stderr=True)
    with status.status(f"evaluating baselines on {env.describe()} ..."):
        results = report.run_baselines(env, values["episodes"], values["tasks"], values["seed"], names)
    summary = report.summarize(results)
    _print_summary(summary)
    if values["json"]:
        report.write_json(summary, values["json"])
    if values["markdown"]:
        report.write_markdown(summary, values["markdown"])
    if values["plot"]:
        report.plot_curves(summary, values["plot"])
    return 0


# ---------------------------------------------------------------------------------------------
# metarl train ALGO FAMILY ..., metarl eval RUN ...  (the work is done by metarl.run)
_TRAIN_TEXT = (
    "Train ALGO on trials of N episodes of tasks from FAMILY and write the run folder --out: config.json "
    "(everything needed to rerun), metrics.jsonl (means over each chunk of updates, per seed and averaged), "
    "TensorBoard events, checkpoints/ (atomic, no pickle) and eval/ (held-out evaluations beside the "
    "family's baselines, as JSON, Markdown and PNG). --steps counts environment steps per seed; --seeds "
    "independent seeds train at once (vmapped). Ctrl-C stops after the running chunk with a checkpoint; "
    "--resume continues a stopped or killed run from its last checkpoint with the same result as an "
    "uninterrupted run (give the same ALGO, FAMILY, options, --seeds and --seed; --steps may grow). "
    "Family options are the family's own and algorithm options the algorithm's config: see "
    "`metarl train ALGO FAMILY --help`."
)


def _train_flags(has_presets: bool) -> list[Flag]:
    out = [
        flag("steps", int, dataclasses.MISSING, "environment steps per seed to train for", "N"),
        flag("out", str, dataclasses.MISSING, "run folder to write (runs/NAME)", "DIR"),
        flag("episodes", int, 10, "n, episodes per trial (pulls, for bandits)", "N"),
        flag("seeds", int, 1, "independent training seeds, trained at once", "S"),
        flag("seed", int, 0, "seed i trains from fold_in(fold_in(PRNGKey(seed), stream), i)", "SEED"),
        flag("resume", bool, False, "continue the run in --out from its last checkpoint"),
        flag("eval_every", int | None, None, "env steps between held-out evaluations (None: at the end only; 0: never)", "N"),
        flag("eval_tasks", int, 200, "held-out tasks per evaluation (0: no evaluation)", "T"),
        flag("eval_seed", int | None, None, "held-out tasks are sample_tasks(PRNGKey(eval_seed)) (None: --seed)", "S"),
        flag("eval_baselines", str | None, None, "comma-separated baselines shown beside the agent (None: all that apply; 'none')", "A,B,..."),
        flag("checkpoint_every", int | None, None, "env steps between checkpoints (None: by time only)", "N"),
        flag("checkpoint_seconds", float, 300.0, "at most this many seconds between checkpoints", "SEC"),
        flag("keep_checkpoints", int, 3, "checkpoints kept (the newest)", "K"),
        flag("chunk_seconds", float, 5.0, "target seconds of one jitted chunk of updates (I/O happens between chunks)", "SEC"),
        flag("quiet", bool, False, "no progress bar or log lines"),
    ]
    if has_presets:
        out.append(flag("preset", str | None, None, "named algorithm config whose values become the defaults of the algorithm's options", "NAME"))
    return out


def _presets(algo_cls) -> dict[str, Any]:
    """The algorithm's named configs (its `presets` class attribute)."""
    return dict(getattr(algo_cls, "presets", None) or {})


def _preset_arg(args: Sequence[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--preset" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--preset="):
            return a.split("=", 1)[1]
    return None


def _given(args: Sequence[str], name: str) -> bool:
    """Whether option --NAME appears on the command line."""
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def _saved_total_updates(values: dict[str, Any]) -> int | None:
    """`total_updates` from the config.json of the run being resumed, if any."""
    import json
    import os

    path = os.path.join(values["out"], "config.json")
    if not values["resume"] or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return int(json.load(f)["algorithm"]["config"]["total_updates"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the loop reports a bad or mismatched config clearly


def _names_list(text: str | None) -> list[str] | None:
    """'a,b' -> [a, b]; 'none' -> []; None -> None (all)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    return [n.strip() for n in text.split(",") if n.strip()]


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from metarl.eval import report

    columns, rows = report.table_rows(summary)
    console = _console()
    console.print(f"{report.title(summary)}; {summary['header']['interval']}")
    table = Table()
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@command(
    "train",
    "Train an algorithm on a task family; write a run folder (metrics, checkpoints, evaluations).",
    usage="metarl train ALGO FAMILY [family options] [algorithm options] --steps N --out DIR [--seeds S] [--episodes N] [--resume] [--eval-every N] [--eval-tasks T]",
    example="metarl train rl2 bandit --arms 5 --episodes 10 --steps 5000000 --seeds 1 --out runs/b5",
)
def train_command(args: list[str]) -> int:
    from metarl import algos, envs
    from metarl.errors import CheckpointError
    from metarl.run import TrainingDiverged, train

    if _wants_help(args):
        description = _describe(
            "train",
            _TRAIN_TEXT,
            f"ALGO is one of: {', '.join(algos.names()) or '(none yet)'}. FAMILY is one of: {', '.join(envs.names())}.",
        )
        parse_flags(["--help"], _train_flags(False), prog="metarl train ALGO FAMILY", description=description)
        return 0
    (algo_name, family), rest = take_names(args, ["ALGO", "FAMILY"], [algos.algorithm_class, envs.family_class])
    algo_cls = algos.algorithm_class(algo_name)
    presets = _presets(algo_cls)
    family_flags = fields_to_flags(envs.family_class(family))
    algo_flags = fields_to_flags(algo_cls.Config)
    preset = _preset_arg(rest)
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"algorithm {algo_name!r} has no preset {preset!r}; its presets: {', '.join(presets) or '(none)'}")
        chosen = presets[preset]
        algo_flags = [dataclasses.replace(f, default=getattr(chosen, f.name)) for f in algo_flags]
    common = _train_flags(bool(presets))
    description = _describe(
        "train",
        _TRAIN_TEXT,
        f"Options of {family}: {', '.join(f.name for f in family_flags) or '(none)'}. Options of {algo_name}: "
        f"{', '.join(f.name for f in algo_flags)}" + (f"; presets: {', '.join(presets)}." if presets else "."),
    )
    values = parse_flags(rest, family_flags + algo_flags + common, prog=f"metarl train {algo_name} {family}", description=description)
    env = envs.make(family, **pick(values, family_flags))
    algo_values = pick(values, algo_flags)
    algo = algos.make(algo_name, env, values["episodes"], **algo_values)
    if "total_updates" in algo_values and not _given(rest, "total-updates"):
        # A learning-rate schedule of `total_updates` updates (First-Explore) spans this run's --steps
        # unless set explicitly; a resumed run keeps the schedule it started with.
        algo_values["total_updates"] = _saved_total_updates(values) or -(-values["steps"] // algo.steps_per_update)
        algo = algos.make(algo_name, env, values["episodes"], **algo_values)
    try:
        result = train(
            algo,
            seeds=values["seeds"],
            total_steps=values["steps"],
            out_dir=values["out"],
            resume=values["resume"],
            seed=values["seed"],
            eval_every=values["eval_every"],
            eval_tasks=values["eval_tasks"],
            eval_seed=values["eval_seed"],
            eval_baselines=_names_list(values["eval_baselines"]),
            checkpoint_every=values["checkpoint_every"],
            checkpoint_seconds=values["checkpoint_seconds"],
            keep_checkpoints=values["keep_checkpoints"],
            chunk_seconds=values["chunk_seconds"],
            quiet=values["quiet"],
            command=["metarl", "train", *args],
        )
    except CheckpointError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: stopped; the last checkpoint in {values['out']} is intact (continue with --resume)", file=sys.stderr)
        return 130
    if not values["quiet"]:
        import glob
        import json
        import os

        evals = sorted(glob.glob(os.path.join(values["out"], "eval", "steps_*.json")))
        if evals and not result.interrupted:
            with open(evals[-1]) as f:
                _print_summary(json.load(f))
        speed = result.updates * algo.steps_per_update * values["seeds"] / max(result.train_seconds, 1e-9)
        print(
            f"{values['out']}: {result.env_steps:,} env steps per seed, {result.updates:,} updates; compile "
            f"{result.compile_seconds:.1f} s, training {result.train_seconds:.1f} s ({speed:,.0f} steps/s over all seeds)"
            + ("; stopped early, continue with --resume" if result.interrupted else ""),
            file=sys.stderr,
        )
    return 130 if result.interrupted else 0


_EVAL_TEXT = (
    "Evaluate a saved run: rebuild its algorithm from RUN/config.json, load its last checkpoint and score "
    "every training seed's agent on T held-out tasks, beside the family's baselines on the same tasks (all "
    "that apply, or --baselines). Prints the table (mean total return with a 95% interval over per-seed means, "
    "or over tasks with one seed; regret against the Oracle when there is one) and writes it as JSON and "
    "Markdown and the per-episode return curves as PNG (default RUN/eval/final.*)."
)


@command(
    "eval",
    "Evaluate a saved run's agents against the family's baselines; write the table and plot.",
    usage="metarl eval RUN [--tasks T] [--seed S] [--baselines A,B] [--json PATH] [--plot PATH]",
    example="metarl eval runs/b5 --tasks 1000 --json runs/b5/eval/final.json --plot runs/b5/eval/final.png",
)
def eval_command(args: list[str]) -> int:
    from metarl.errors import CheckpointError
    from metarl.run import evaluate_run

    flags = [
        flag("tasks", int, 1000, "held-out tasks, every agent on the same ones", "T"),
        flag("seed", int | None, None, "tasks are sample_tasks(PRNGKey(seed)) (None: the run's evaluation seed)", "S"),
        flag("baselines", str | None, None, "comma-separated baselines (None: all that apply; 'none')", "A,B,..."),
        flag("checkpoint", str | None, None, "a checkpoint file to evaluate (None: the run's last)", "PATH"),
        flag("json", str | None, None, "summary JSON path (default RUN/eval/final.json)", "PATH"),
        flag("markdown", str | None, None, "Markdown table path (default: the JSON path with .md)", "PATH"),
        flag("plot", str | None, None, "PNG plot path (default RUN/eval/final.png)", "PATH"),
    ]
    if _wants_help(args):
        parse_flags(["--help"], flags, prog="metarl eval RUN", description=_describe("eval", _EVAL_TEXT))
        return 0
    if args[0].startswith("-"):
        raise ConfigError("missing RUN, the run folder to evaluate (see --help)")
    run_dir, rest = args[0], args[1:]
    values = parse_flags(rest, flags, prog="metarl eval RUN", description=_describe("eval", _EVAL_TEXT))
    status = _console(stderr=True)
    try:
        with status.status(f"evaluating {run_dir} ..."):
            summary = evaluate_run(
                run_dir,
                tasks=values["tasks"],
                seed=values["seed"],
                baselines=_names_list(values["baselines"]),
                json_path=values["json"],
                md_path=values["markdown"],
                plot_path=values["plot"],
                checkpoint=values["checkpoint"],
                log=lambda line: print(f"{PROG}: {line}", file=sys.stderr),
            )
    except CheckpointError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0


# ---------------------------------------------------------------------------------------------
# metarl, metarl --help
def _top_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND --help for each command's options)", "", OVERVIEW, "", "commands:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", "examples:"] + [f"  {c.example}" for c in COMMANDS.values()]
    return "\n".join(lines)


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache in ~/.cache/metarl/jax (or $METARL_CACHE_DIR; "off"
    disables it): a second run of the same command skips most of its XLA compilation."""
    import os

    path = os.environ.get("METARL_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "metarl", "jax"))
    if path.strip().lower() == "off":
        return
    import jax

    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # an unwritable home: run without the cache
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: `sys.argv[1:]`, with JAX's persistent compilation
    cache on); returns the exit code."""
    if argv is None:
        enable_compilation_cache()
    args = list(sys.argv[1:] if argv is None else argv)
    if _wants_help(args):
        print(_top_help())
        return 0
    if args[0] == "--version":
        from metarl import __version__

        print(f"{PROG} {__version__}")
        return 0
    try:
        if args[0] not in COMMANDS:
            raise ConfigError(f"unknown command {args[0]!r}; valid commands: {', '.join(COMMANDS)}")
        return COMMANDS[args[0]].run(args[1:])
    except MetarlError as error:  # ConfigError, CheckpointError, ...: one clear line, no traceback
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # tyro's --help (0) and malformed flags (2, after its own message)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


if __name__ == "__main__":
    sys.exit(main())
