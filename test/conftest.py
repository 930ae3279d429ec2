"""Suite-wide set-up: the nodes under test are killed hard on purpose (restarts, dead learners, timeouts);
the Fast DDS shared memory they leave in /dev/shm is RAM, so the suite reclaims it before and after."""

import pytest

from hilserl.nodes.dds import reclaim_stale_segments
from rosutil import Probe, ros_env, unique_domain_id


def pytest_sessionstart(session):
    reclaim_stale_segments()


def pytest_sessionfinish(session, exitstatus):
    reclaim_stale_segments()


@pytest.fixture
def ros_graph(tmp_path):
    """(environment, processes, probe) on a ROS domain of the test's own; started processes are stopped after."""
    domain = unique_domain_id()
    env, procs = ros_env(domain), []
    probe = Probe(domain)
    yield env, procs, probe
    for p in procs:
        p.stop()
    probe.close()
