"""HIL-SERL recovers a policy on a cell unlike its training sim: the shipped checkpoint, fine-tuned through the
whole ROS loop on the shifted variant with the simulated operator taking over when it stalls, beats the same
checkpoint without learning on the same sim seeds (success from the sim's own record, counted only where
nobody took over)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("genesis")
from finetune_run import SHIFTED_LEARNER, SHIFTED_OPERATOR, format_table, run_finetune  # noqa: E402
from test_finetune import LEARNER, PROTECTED, SHIPPED  # noqa: E402

SEED = 9_000_000  # README's shifted-cell seeds
# With SHIFTED_LEARNER and SHIFTED_OPERATOR the fine-tuning's own success took off at episodes 14-24 in eight runs
# on a shared 2-core CPU (README), after roughly 500-900 learner updates: run well past that, then judge the last
# JUDGED episodes.
UPDATES = 1000
EPISODES = 45
JUDGED = 15
LEAD = 4  # own successes the fine-tuned policy must have over the pretrained one on the same JUDGED seeds
TIMEOUT = 480.0


def own_successes(run) -> int:
    return sum(e.unassisted_success for e in run.episodes[-JUDGED:])


@pytest.mark.skipif(not (SHIPPED / "demos.safetensors").is_file(), reason="the shipped checkpoint has no demos")
def test_fine_tuning_with_the_operator_beats_the_pretrained_checkpoint_on_the_shifted_cell(tmp_path: Path):
    tuned = run_finetune(tmp_path / "tuned", str(SHIPPED), LEARNER | PROTECTED | SHIFTED_LEARNER,
                         updates=UPDATES, min_episodes=EPISODES, timeout=TIMEOUT, seed=SEED, variant="shifted",
                         operator=SHIFTED_OPERATOR)
    print(f"fine-tuned: {tuned.learner_step} updates, {len(tuned.episodes)} sim episodes, {tuned.wall_s:.0f} s, "
          f"interventions {tuned.intervention_rate():.0%}, own successes "
          f"{''.join('1' if e.unassisted_success else '0' for e in tuned.episodes)}\n{format_table(tuned)}")
    assert tuned.intervention_rate() > 0, "the operator never took over"
    # The pretrained checkpoint, not learning and unassisted, on the seeds of the fine-tuning's last episodes.
    first = SEED + len(tuned.episodes) - JUDGED
    pretrained = run_finetune(tmp_path / "pretrained", str(SHIPPED), {"training": False}, updates=0,
                              min_episodes=JUDGED, timeout=TIMEOUT, seed=first, variant="shifted")
    pretrained.episodes = pretrained.episodes[:JUDGED]
    tuned_wins, pretrained_wins = own_successes(tuned), own_successes(pretrained)
    print(f"seeds {first}..{first + JUDGED - 1}: fine-tuned {tuned_wins}/{JUDGED}, pretrained "
          f"{pretrained_wins}/{JUDGED}")
    # Why this bound is neither flaky nor lenient. Measured on seeds 9000000+: the pretrained checkpoint succeeded
    # in 5 of 35 shifted episodes, and 0 of 15 on the judged seeds in each of seven runs (p ~ 0.12 at most). With
    # SHIFTED_LEARNER and SHIFTED_OPERATOR the fine-tuned policy took off by episode 24 in eight runs (six of this
    # test, two of bench/finetune.py) and succeeded on its own in 12, 15, 12, 15, 10, 13, 14 and 15 of its last 15
    # episodes (106/120; the operator still takes over now and then, and such episodes do not count). Only a
    # take-off after about episode 40 would fail it; none came later than 24. With independent Binomial(15, 0.8) and
    # Binomial(15, 0.12) episodes a lead under 4 has probability 0.0013; two policies both at 0.12 (learning broken)
    # show a lead of 4 with probability 0.024, and less on the same seeds, where their scenes are the same; with the
    # learner's training off the test failed (README).
    assert tuned_wins >= pretrained_wins + LEAD, (tuned_wins, pretrained_wins)
