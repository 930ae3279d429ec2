"""What the actor checks before acting, in plain Python: weights that fit the arm, and fresh sensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def incompatibility(config, joints: Sequence[str], image_topics: Sequence[str]) -> str | None:
    """Why a policy config cannot see this arm (None = it can); what its actions need: control/arm_command.py."""
    if config.state_dim not in (0, len(joints)):
        return f"policy reads {config.state_dim} state values; this actor provides {len(joints)} joint positions"
    if config.num_cameras != len(image_topics):
        return f"policy sees {config.num_cameras} camera(s); `image_topics` names {len(image_topics)}"
    return None


def observation_problem(now: float, frames: Mapping[str, tuple], image_topics: Sequence[str],
                        joint_state: tuple | None, stale_after: float, lockstep: bool) -> str | None:
    """Why the newest observation cannot be acted on (None = it can). `frames[topic]` and `joint_state` are
    (received monotonic time, stamp, value); lock-step has no staleness (the sim waits for the actor)."""
    for topic in image_topics:
        if topic not in frames:
            return f"no image received yet on {topic}"
        age = now - frames[topic][0]
        if not lockstep and age > stale_after:
            return f"image on {topic} is stale ({age:.2f} s old, limit {stale_after} s)"
    if joint_state is None:
        return "no joint_states received yet"
    age = now - joint_state[0]
    if not lockstep and age > stale_after:
        return f"joint_states is stale ({age:.2f} s old, limit {stale_after} s)"
    return None
