"""The reference numbers the benchmarks compare against match shared/reference/rl2_tables.md."""

import pathlib
import re

import pytest

from benchmarks import reference_tables as ref

ROOT = pathlib.Path(__file__).resolve().parents[1]

SOURCE = ROOT.parent / "shared" / "reference" / "rl2_tables.md"


def _rows(text, first_cell):
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.fullmatch(first_cell, cells[0]):
            rows[cells[0]] = [float(c) if c else None for c in cells[1:]]
    return rows


@pytest.mark.skipif(not SOURCE.exists(), reason="shared/reference is not beside this checkout")
def test_transcribed_tables_match_the_reference_file():
    text = SOURCE.read_text()
    bandit = _rows(text, r"n=\d+,k=\d+")
    assert {tuple(int(x) for x in re.findall(r"\d+", key)) for key in bandit} == set(ref.BANDIT)
    for key, values in bandit.items():
        n, k = (int(x) for x in re.findall(r"\d+", key))
        assert ref.BANDIT[(n, k)] == values
    mdp = _rows(text, r"\d+")
    assert {int(key) for key in mdp} == set(ref.MDP)
    for key, values in mdp.items():
        assert ref.MDP[int(key)] == values
