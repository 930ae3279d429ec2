"""Suite-wide set-up: the nodes under test are killed hard on purpose (restarts, dead learners, timeouts);
the Fast DDS shared memory they leave in /dev/shm is RAM, so the suite reclaims it before and after."""

from hilserl.nodes.dds import reclaim_stale_segments


def pytest_sessionstart(session):
    reclaim_stale_segments()


def pytest_sessionfinish(session, exitstatus):
    reclaim_stale_segments()
