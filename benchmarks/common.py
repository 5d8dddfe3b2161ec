"""What the benchmark scripts share: the machine's description and the results store (JSON +
Markdown written side by side under benchmarks/results/, atomically)."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import jax

from metarl.run.folder import write_bytes_atomic, write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def machine() -> dict[str, Any]:
    """The machine and software a result was measured on."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU" + (f" ({cpu})" if cpu else ""),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "load_average_1min": load,
        "commit": commit or None,
    }


def write_results(name: str, data: dict[str, Any], markdown: str, directory: str = RESULTS) -> tuple[str, str]:
    """Write `name.json` (data) and `name.md` (markdown) to `directory`; returns both paths."""
    os.makedirs(directory, exist_ok=True)
    json_path, md_path = os.path.join(directory, f"{name}.json"), os.path.join(directory, f"{name}.md")
    write_json_atomic(json_path, data)
    write_bytes_atomic(md_path, markdown.encode())
    return json_path, md_path


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"
