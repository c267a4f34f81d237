"""Run a benchmark's workload under another checkout's code, for a side-by-side ratio.

The benchmark script is started again with ``PYTHONPATH=<checkout>/src`` and
``--json``, and prints its result as one JSON line; the two runs go one after
the other, never at the same time (on 2 cores they would slow each other down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def under(checkout: str, script: str, args: list[str]) -> dict:
    """The JSON result of ``script args --json`` run with ``checkout``'s library."""
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.abspath(checkout), "src"))
    cmd = [sys.executable, script, *args, "--json"]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])
