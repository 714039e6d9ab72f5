"""kill -9 at seeded journal points of a fleet that pauses antivirus, boots clean, runs DISM and
restarts (and, for half the trials, kill the first resume too), resume to the end, and compare
with the uninterrupted run of the same lab seed: same outcomes, no extra restart, no long step
run twice, no session left open, no restore owed, nothing left paused.

A CI-sized sample; bench/kill_resume.py tries every journal point and prints the README's figures.
"""

from __future__ import annotations

import random

import pytest
from killresume import differences, run_trial

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def uninterrupted():  # noqa: ANN201
    return run_trial([]).ending


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_a_killed_and_resumed_run_ends_as_the_uninterrupted_one(uninterrupted, seed: int) -> None:  # noqa: ANN001
    rng = random.Random(seed)
    point = rng.randint(3, max(4, uninterrupted.events - 3))
    kills = [point] if seed % 2 else [point, rng.randint(3, 40)]  # odd seeds: one kill; even: a second during resume
    trial = run_trial(kills)
    assert trial.exit_codes == [0]
    assert differences(trial.ending, uninterrupted) == [], f"killed at {kills}"
