"""The live-learner intake fuzz at benchmark size: test/test_intake_live.py with many more Hypothesis examples.

Each example sends a fresh stream's valid batches interleaved with malformed payloads (about 2.6 per example
on average), so the default 4500 examples send more than 10,000 malformed payloads to one learner process.
It prints the test's summary line: malformed payloads rejected, valid batches stored exactly once.

    .venv/bin/python bench/intake_fuzz.py [--examples 4500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4500)
    parser.add_argument("--answer-timeout", type=float, default=300.0,
                        help="seconds one example's answers may take on a loaded machine before the run fails")
    parser.add_argument("--log", default="", help="the test's whole output goes here as it runs (default: a temp file)")
    args = parser.parse_args()
    env = dict(os.environ, HILSERL_INTAKE_FUZZ_EXAMPLES=str(args.examples),
               HILSERL_INTAKE_FUZZ_ANSWER_TIMEOUT=str(args.answer_timeout),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    log = Path(args.log or tempfile.mkstemp(prefix="hilserl-intake-fuzz-", suffix=".log")[1])
    print(f"intake fuzz: {args.examples} examples against one live learner; progress in {log}", flush=True)
    with open(log, "w") as out:
        returncode = subprocess.run([sys.executable, "-m", "pytest", "test/test_intake_live.py", "-q", "-s", "-p",
                                     "no:cacheprovider"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    text = log.read_text()
    lines = [line for line in text.splitlines() if "live intake fuzz" in line or "passed" in line or "failed" in line]
    print("\n".join(lines) if returncode == 0 else text[-20000:])
    return returncode


if __name__ == "__main__":
    sys.exit(main())
