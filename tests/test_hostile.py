"""Hostile inputs (checkpoints, config folders, photos, ws files, API values) in one process with a memory cap.

``tests/hostile_cases.py`` runs every case in a child process whose address space is capped (4 GiB, about
a tenth of what the worst case would take unchecked) and prints one line per case. Each must be refused
with a user message (a ``DemoError``; never a traceback) within seconds, or, for the cases marked
``(completes)``, finish at once; after every case the official-format fixture still loads in that process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADDRESS_SPACE_CAP = 4 << 30
SECONDS_PER_CASE = 10.0


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def test_hostile_inputs_are_refused_in_bounded_time_and_memory(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tests.hostile_cases", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
        timeout=300, preexec_fn=_cap_memory,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(results) >= 15, run.stdout
    problems = []
    for result in results:
        expected = "completed" if result["name"].endswith("(completes)") else "refused"
        if result["outcome"] != expected:
            problems.append(f"{result['name']}: {result['outcome']} ({result['type']}: {result['message']})")
        if result["seconds"] > SECONDS_PER_CASE:
            problems.append(f"{result['name']}: took {result['seconds']} s")
        if not result["fixture_loads"]:
            problems.append(f"{result['name']}: the fixture no longer loads afterwards")
        if expected == "refused" and not result["message"].strip():
            problems.append(f"{result['name']}: refused without a message")
    assert not problems, "\n".join(problems)
