"""The golden hashes (tests/golden.py): every case's outputs are those stored, so an engine,
env or feature change that moves any result is a deliberate ``--update``, never an accident."""

from __future__ import annotations

import json

import pytest
from golden import CASES, HASHES, SIZES, case_hash

STORED = json.loads(HASHES.read_text())


@pytest.mark.parametrize("case", [f"{c}/N{n}" for c in CASES for n in SIZES])
def test_golden_hash(case: str) -> None:
    name, n = case.split("/N")
    assert case_hash(name, int(n)) == STORED[case], (
        f"{case} moved: if the change is meant, run `python tests/golden.py --update` and say "
        "in the commit which cases moved and why")


def test_every_case_is_stored() -> None:
    assert sorted(STORED) == sorted(f"{c}/N{n}" for c in CASES for n in SIZES)
