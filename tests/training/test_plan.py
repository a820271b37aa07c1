"""training.plan: one immutable plan per run, made before anything is loaded or written, and the one config record."""

import dataclasses

import pytest

from genvision.config import GANConfig, VAEConfig
from genvision.training.gan import GANTask
from genvision.training.plan import plan_run
from genvision.training.vae import VAETask


@pytest.mark.parametrize("task_class, config_class", [(GANTask, GANConfig), (VAETask, VAEConfig)])
def test_the_plan_resolves_features_and_leaves_the_given_config_alone(tmp_path, task_class, config_class):
    config = config_class(out_dir=str(tmp_path / "run"), fid_every=5)
    plan = plan_run(task_class, config)
    assert plan.config.features == "classifier"  # auto: the shipped classifier of mnist5k
    assert config.features == "auto" and plan.config is not config  # the caller's config is not written
    assert plan.kind == task_class.kind and plan.checkpoint is None and not plan.finished
    assert not (tmp_path / "run").exists()  # planning writes nothing


def test_the_plan_is_frozen_and_resolving_it_makes_a_new_one(tmp_path):
    plan = plan_run(GANTask, GANConfig(out_dir=str(tmp_path / "run")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.config = GANConfig()
    final = plan.resolved(mixed_precision="no", channels=1)
    assert (final.config.mixed_precision, final.config.channels) == ("no", 1)
    assert (plan.config.mixed_precision, plan.config.channels) == ("auto", 0)
    assert final.run_dir == plan.run_dir and final.start_step == 0
