"""`--lr-ramp-down F`: both learning rates fall linearly toward 0 over the last F of --num-steps, as a function of the
step alone, so a resumed run continues the schedule exactly."""

import pytest

from genvision.training.gan import lr_factor
from helpers import TINY_GAN, assert_one_line_error, assert_same_checkpoints, cli, load_state


def test_the_factor_is_one_then_falls_linearly_and_the_last_step_still_moves():
    assert [lr_factor(step, 10, 0.0) for step in range(10)] == [1.0] * 10
    assert [lr_factor(step, 10, 0.4) for step in range(10)] == [1.0] * 6 + [1.0, 0.75, 0.5, 0.25]
    assert [lr_factor(step, 4, 1.0) for step in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(3000 - 1, 3000, 0.3) == pytest.approx(1 / 900)


def test_a_run_steps_with_the_ramped_rates_and_resumes_them_exactly(tmp_path):
    common = [*TINY_GAN, "--report-to", "none", "--sample-every", "0", "--num-steps", "6", "--lr", "1e-3",
              "--d-lr", "4e-3", "--lr-ramp-down", "0.5", "--checkpoint-every", "3"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    code, _, stderr = cli("train-gan", "--out-dir", straight, *common)
    assert code == 0, stderr[-3000:]
    # The optimizers' rates of the last step taken: after 3 steps the factor of step 2 (1), after 6 that of step 5.
    for step, factor in ((3, 1.0), (6, 1 / 3)):
        state = load_state(straight / "checkpoints" / f"step-{step:06d}")
        assert state["optimizer_g"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * factor)
        assert state["optimizer_d"]["param_groups"][0]["lr"] == pytest.approx(4e-3 * factor)
    code, _, stderr = cli("train-gan", "--out-dir", resumed, *common, "--resume",
                          straight / "checkpoints" / "step-000003")
    assert code == 0, stderr[-3000:]
    assert_same_checkpoints(straight / "checkpoints" / "step-000006", resumed / "checkpoints" / "step-000006")


def test_a_share_outside_0_1_is_one_line():
    code, _, stderr = cli("train-gan", "--lr-ramp-down", "1.5", "--dry-run")
    assert_one_line_error(code, stderr, "--lr-ramp-down", "1.5")
