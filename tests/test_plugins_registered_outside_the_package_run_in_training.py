"""An evaluator, an adversarial method and a train hook registered from outside the
package (here, in this file) run through `train_and_evaluate` with nothing changed inside
mmjax: each is one registered class plus a config entry (docs/interfaces.md)."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, model_variables
from mmjax.objectives.adversarial import (AdversarialMethod, register_method,
                                          require_non_negative)
from mmjax.train import loop
from mmjax.train.hooks import Hook, register_hook


@register_evaluator("mean_logit_for_test")
class MeanLogit(Evaluator):
  """The mean of the model's top logit over the first `num_examples` eval digits,
  times `scale`; and the step it was called at."""
  options = dict(num_examples=50, scale=1.0)

  @classmethod
  def check_options(cls, options, key, config):
    if options.scale <= 0:
      raise ConfigError(f"{key}.scale={options.scale} must be positive.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    self.logits = exp.model_logits
    self.examples = eval_examples(self.data_config, options.num_examples, self.batch_size)
    self.examples.pop("label")

  def __call__(self, params, model_state, step):
    variables = model_variables(params, model_state)
    inputs = self.logits.inputs(variables, self.examples, self.batch_size)
    logits = self.logits.outputs(variables, inputs, self.batch_size)["logits"]
    return {"top_logit": self.cfg.scale * float(logits.max(-1).mean()),
            "examples": float(len(logits)), "at_step": float(step)}


@register_method("uniform_noise_for_test")
@dataclasses.dataclass(frozen=True, eq=False)
class UniformNoise(AdversarialMethod):
  """L(x) + noise_weight · L(x + u), u uniform in the eps-ball: the random-noise baseline
  of the AT papers."""
  noise_weight: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    require_non_negative(self.kind, "noise_weight", self.noise_weight,
                         "the weight of the noisy loss")

  def __call__(self, params, batch, rng, *, model_state, train):
    prepared, inputs = self.prepare_and_embed(params, batch, rng, model_state, train)
    noisy = {k: jnp.clip(v + jax.random.uniform(jax.random.fold_in(rng, 7), v.shape,
                                                minval=-self.eps, maxval=self.eps), 0, 1)
             if k in self.modalities else v for k, v in inputs.items()}
    clean, (metrics, state) = self.objective.loss_from_inputs(
        params, inputs, prepared, rng, model_state=model_state, train=train)
    noise, (noisy_metrics, state) = self.objective.loss_from_inputs(
        params, noisy, prepared, rng, model_state=state, train=train)
    total = clean + self.noise_weight * noise
    return total, ({"loss": total, "clean/loss": clean, "noise/loss": noise,
                    "noise/accuracy": noisy_metrics["accuracy"]}, state)


STEPS_SEEN = []


@register_hook("step_recorder_for_test")
class StepRecorder(Hook):
  """Records every 2nd step (and the last) into a list, and writes a 'seen' row."""
  every = 2

  @classmethod
  def from_experiment(cls, exp):
    # On only for the run that asks for it (the registry is process-wide).
    return cls() if exp.config.train.seed == 1234 else None

  def after_step(self, run):
    if self.due(run):
      STEPS_SEEN.append(run.step)
      run.writer.write(run.step, "seen", {"final": float(run.final)})


def test_a_plugin_evaluator_method_and_hook_run_through_the_trainer(tiny_config, tmp_path):
  config = tiny_config(total_steps=5, checkpoint_every=5, log_every=1, eval_every=2,
                       seed=1234)
  config.adversarial.update(dict(kind="uniform_noise_for_test", eps=0.1, noise_weight=0.5))
  config.evals.top = dict(type="mean_logit_for_test", num_examples=40, scale=2.0)
  config.evals.top_end = dict(type="mean_logit_for_test", every=100, num_examples=20)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  # The method's loss and metrics.
  assert {"clean/loss", "noise/loss", "noise/accuracy"} <= set(result)
  assert result["loss"] == pytest.approx(result["clean/loss"] + 0.5 * result["noise/loss"],
                                         rel=1e-5)
  assert np.isfinite(result["train/loss"]) and result["noise/loss"] > 0
  # The evaluator: two of one type, each on its own cadence, under its own prefix.
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  evals = {r["step"]: r for r in rows if r["split"] == "eval"}
  assert sorted(evals) == [2, 4, 5]
  assert {k for k in evals[2] if k.startswith("top")} == {"top/top_logit", "top/examples",
                                                          "top/at_step"}
  assert evals[4]["top/at_step"] == 4.0 and evals[5]["top_end/examples"] == 20.0
  assert result["top/examples"] == 40.0 and result["top/top_logit"] > 0
  assert "loss" in evals[2] and "top_end/top_logit" not in evals[2]
  # The hook: every 2nd step and the final one.
  assert STEPS_SEEN == [2, 4, 5]
  assert [r["final"] for r in rows if r["split"] == "seen"] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("entry, match", [
    (dict(type="mean_logit_for_tst"), "Did you mean 'mean_logit_for_test'"),
    (dict(type="mean_logit_for_test", scal=2.0), r"Did you mean 'scal' -> 'scale'"),
    (dict(type="mean_logit_for_test", scale="big"), r"scale='big' must be a number"),
    (dict(type="mean_logit_for_test", scale=-1.0), r"evals.top.scale=-1.0 must be positive"),
    (dict(type="mean_logit_for_test", every=-2), r"every=-2 must be >= 0"),
])
def test_a_plugin_evaluators_bad_options_fail_before_compute(tiny_config, tmp_path, entry,
                                                            match):
  config = tiny_config(total_steps=3)
  config.evals.top = entry
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")


@pytest.mark.parametrize("options, match", [
    (dict(noise_weight=-1.0), "noise_weight=-1.0 must be a number"),
    (dict(noise_wieght=1.0), "Did you mean 'noise_weight'"),
    (dict(beta=6.0), "option of adversarial.kind='trades'"),
])
def test_a_plugin_methods_bad_options_fail_before_compute(tiny_config, tmp_path, options,
                                                         match):
  bad = tiny_config(total_steps=3)
  bad.adversarial.update(dict(kind="uniform_noise_for_test", eps=0.1, **options))
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(bad, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad" / "checkpoints")
