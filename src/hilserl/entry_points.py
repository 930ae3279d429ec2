"""Console scripts for `ros2 run hilserl <name>`: each runs the same `main` as `python -m hilserl <command>`.

setup.py names one script per hilserl.__main__.COMMANDS entry (dashes become underscores);
test/test_packaging.py checks that the two lists match.
"""

from __future__ import annotations

import sys

from hilserl.__main__ import COMMANDS, main


def _script(command: str):
    def run() -> int:
        return main([command, *sys.argv[1:]])
    run.__name__ = command.replace("-", "_")
    run.__doc__ = f"`{command}`: {COMMANDS[command][1]}"
    return run


learner = _script("learner")
actor = _script("actor")
sim = _script("sim")
teleop = _script("teleop")
operator = _script("operator")
init_checkpoint = _script("init-checkpoint")
infer = _script("infer")
pretrain = _script("pretrain")
bringup = _script("bringup")
plot = _script("plot")
record_frames = _script("record-frames")
reward_classifier = _script("reward-classifier")
