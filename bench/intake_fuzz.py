"""The live-learner intake fuzz at benchmark size: test/test_intake_live.py with many more Hypothesis examples.

Each example sends a fresh stream's valid batches interleaved with malformed payloads (about 2.8 per example
on average), so the default 4000 examples send more than 10,000 malformed payloads to one learner process.
It prints the test's summary line: malformed payloads rejected, valid batches stored exactly once.

    .venv/bin/python bench/intake_fuzz.py [--examples 4000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4000)
    args = parser.parse_args()
    env = dict(os.environ, HILSERL_INTAKE_FUZZ_EXAMPLES=str(args.examples),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "pytest", "test/test_intake_live.py", "-q", "-s", "-p", "no:cacheprovider"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if "live intake fuzz" in line or "passed" in line
             or "failed" in line]
    print("\n".join(lines) if result.returncode == 0 else result.stdout[-20000:] + result.stderr[-5000:])
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
