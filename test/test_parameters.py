"""Every node refuses a bad parameter value with exit code 2 and one stderr line naming it; good edge values start.

Real processes: `python -m hilserl <node> --ros-args -p name:=value`. Nodes check their parameters before
torch or Genesis load, so each refusal costs about a second of start-up.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from hilserl.nodes.params import ACTOR_PARAMS, LEARNER_PARAMS, OPERATOR_PARAMS, SIM_PARAMS, TELEOP_PARAMS
from rosutil import REPO, init_checkpoint, ros_env, unique_domain_id

TABLES = {"learner": LEARNER_PARAMS, "actor": ACTOR_PARAMS, "sim": SIM_PARAMS, "teleop": TELEOP_PARAMS,
          "operator": OPERATOR_PARAMS}
WRONG_TYPE = {"bool": "maybe", "int": "1.5", "float": "abc", "str": "[1,2]", "str[]": "7",
              "int[]": "[a,b]", "float[]": "[x]"}


def bad_values(spec) -> list[str]:
    """A wrong type for every parameter; out of range, unknown choice, empty where each applies."""
    values = [WRONG_TYPE[spec.kind]]
    if spec.low is not None:
        below = spec.low if spec.above else spec.low - 1
        values.append(str(int(below)) if spec.kind.startswith("int") else f"{float(below)}")
    if spec.high is not None:
        values.append(str(int(spec.high) + 1) if spec.kind.startswith("int") else f"{spec.high + 1.0}")
    if spec.choices:
        values.append("nonsense")
    if spec.non_empty:
        values.append("''" if spec.kind == "str" else "[]")
    return values


def run(command: str, params: list[str], env: dict) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "hilserl", command, "--ros-args"]
    for p in params:
        args += ["-p", p]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return init_checkpoint(tmp_path_factory.mktemp("ckpt"), "drqv2", "--seed", "1")["path"]


def cases(checkpoint: str) -> list[tuple[str, list[str], str]]:
    """(node, parameters, the parameter the error must name)."""
    out = []
    for node, table in TABLES.items():
        base = [f"checkpoint:={checkpoint}"] if node == "learner" else []
        for spec in table:
            for value in bad_values(spec):
                out.append((node, [p for p in base if not p.startswith(spec.name + ":=")] + [f"{spec.name}:={value}"],
                            spec.name))
    out += [("learner", ["checkpoint:=/nonexistent"], "checkpoint"),
            ("learner", [f"checkpoint:={checkpoint}", "batch_size:=0"], "batch_size"),
            ("actor", ["joint_lower:=[0.0, 1.0]"], "joint_lower"),
            ("actor", ["joints:=[panda_joint1, elbow]"], "joints"),
            ("actor", ["joints:=[a, a]"], "joints"),
            ("actor", ["control_hz:=-5.0"], "control_hz")]
    return out


def test_bad_values_exit_2_with_one_line_naming_the_parameter(checkpoint, tmp_path):
    env = ros_env(unique_domain_id())
    todo = cases(checkpoint)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: (case, run(case[0], case[1], env)), todo))
    failures = []
    for (node, params, name), result in results:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        ok = (result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr + result.stdout
              and f" {name}:=" in lines[0] and lines[0].startswith(f"{node}: "))
        if not ok:
            failures.append(f"{node} {params}: rc={result.returncode} stderr={result.stderr[-400:]!r}")
    assert not failures, "\n".join(failures)
    assert len(results) > 80


def test_good_edge_values_are_accepted(checkpoint, tmp_path):
    """An integer for a float, one number for a per-joint list, a subset of the arm's joints: the node starts."""
    from rcl_interfaces.srv import DescribeParameters, GetParameters

    from rosutil import NodeProcess, Probe, wait_for

    domain = unique_domain_id()
    env = ros_env(domain)
    actor = NodeProcess("actor", {"control_hz": 5, "action_scale": 0.02, "send_transitions": False,
                                  "joints": [f"panda_joint{i}" for i in range(1, 8)]}, env, tmp_path)
    probe = Probe(domain)
    try:
        client = probe.node.create_client(GetParameters, "/actor/get_parameters")
        describe = probe.node.create_client(DescribeParameters, "/actor/describe_parameters")
        wait_for(lambda: client.service_is_ready() and describe.service_is_ready(), 60, "actor parameter services",
                 [actor])
        def call(service, request):
            future = service.call_async(request)
            return wait_for(lambda: future.done() and future.result(), 30, "a parameter service answer", [actor])
        values = call(client, GetParameters.Request(names=["control_hz", "action_scale", "joint_upper"]))
        assert values.values[0].double_value == 5.0
        assert list(values.values[1].double_array_value) == [0.02] * 7
        assert len(values.values[2].double_array_value) == 7  # the Panda's limits, picked by joint name
        described = call(describe, DescribeParameters.Request(names=["control_hz"])).descriptors[0]
        assert "Policy steps per second" in described.description and described.floating_point_range
        assert actor.proc.poll() is None
    finally:
        probe.close()
        actor.stop()


def test_readme_tables_are_the_descriptors():
    from hilserl.nodes.params import markdown_table

    readme = (REPO / "README.md").read_text()
    for node, table in TABLES.items():
        assert markdown_table(table) in readme, f"README's {node} parameter table differs from nodes/params.py"


def test_sim_choices_are_the_tasks_and_variants():
    from hilserl.sim.task import TASKS, VARIANTS

    spec = {s.name: s for s in SIM_PARAMS}
    assert spec["task"].choices == TASKS and spec["variant"].choices == tuple(VARIANTS)
