"""Short CLI calls against the running stack end with their documented exit code, every
time: none may abort while the interpreter finalizes its native client threads."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flowledger.settings import Settings
from projections import migrate
from tests.integration.runtime_support import REPO, component_env

CALLS = 200
FLOWLEDGER = str(Path(sys.executable).parent / "flowledger")


@pytest.mark.timeout(600)
def test_two_hundred_short_calls_exit_with_their_code(settings: Settings) -> None:
    migrate.upgrade(settings.database_url())
    env = component_env(settings)

    def call(n: int) -> tuple[int, str, str]:
        unknown = f"no-such-run-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(
            [FLOWLEDGER, "runs", "cancel", unknown, "--reason", "check", "--json"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr

    # Two at a time: the machine's cores, and the same pressure on Temporal and Kafka
    # as an operator's script looping over runs.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(call, range(CALLS)))
    unexpected = [(code, err[-400:]) for code, _, err in results if code != 2]
    assert unexpected == [], f"{len(unexpected)} of {CALLS} calls: {unexpected[:3]}"
    codes = {json.loads(out)["error"]["code"] for _, out, _ in results}
    assert codes == {"RUN_NOT_FOUND"}
    assert not [err for _, _, err in results if "Fatal Python error" in err]
