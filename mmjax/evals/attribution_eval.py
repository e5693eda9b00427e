"""Attributions with each eval (`type: attribution`): which pixels of `modality` the
model's decision rests on, by each of `methods` (mmjax/explain/methods.py), with
faithfulness scores and pictures.

Metrics (after the prefix), per method m: 'm/deletion_auc' and 'm/insertion_auc' (mean
target probability along the deletion / insertion curves; a faithful map deletes low and
inserts high), 'm/foreground_share' (the share of |attribution| on the input's strokes,
values above `foreground_threshold`: on digits, how much of the map sits on the digit);
'random/deletion_auc' and 'random/insertion_auc' (the same curves for a random ranking,
the reference); for integrated gradients 'integrated_gradients/completeness_gap' (mean
relative |sum of attributions - (f(x) - f(x'))|) and its max. Files
(`output_dir('attributions')`): step_N.json and step_N.png (the inputs and each method's
heatmap, `pictures` rows).

With `randomization` (Adebayo et al. 2018), each method's maps are recomputed after
randomising the model's parameters module by module from the output end (cascading):
'm/randomized_rank_correlation' is the Spearman correlation of the maps of the fully
randomised model with the trained model's (near 1: the map does not depend on what the
model learned), 'm/randomization_passed' is 1 when it is below
`randomization_threshold`; the whole cascade is in the JSON, and a method that fails is
logged.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mmjax.errors import ConfigError
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, model_variables
from mmjax.explain import faithfulness, methods


@register_evaluator("attribution")
class AttributionEvaluator(Evaluator):
  """See the module docstring."""
  options = dict(methods=("gradient", "smoothgrad", "integrated_gradients"),
                 modality="image", num_examples=32, target="predicted", baseline="zeros",
                 ig_steps=64, smoothgrad_samples=16, smoothgrad_sigma=0.15,
                 deletion_steps=20, foreground_threshold=0.5, pictures=8,
                 randomization=True, randomization_threshold=0.5)
  choices = {"target": ("predicted", "label"), "baseline": methods.BASELINES}

  @classmethod
  def check_options(cls, options, key, config):
    unknown = [m for m in options.methods if m not in methods.METHODS]
    if unknown or not options.methods:
      raise ConfigError(f"{key}.methods={tuple(options.methods)!r}: unknown {unknown}; "
                        f"choose from {', '.join(methods.METHODS)}.")
    for name in ("ig_steps", "smoothgrad_samples", "deletion_steps", "num_examples"):
      methods.check_positive(f"{key}.{name}", options[name])
    if options.smoothgrad_sigma <= 0:
      raise ConfigError(f"{key}.smoothgrad_sigma={options.smoothgrad_sigma} must be > 0.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    self.logits = exp.model_logits
    examples = eval_examples(self.data_config, options.num_examples, self.batch_size)
    self.labels = np.asarray(examples.pop("label")).astype(np.int32).reshape(-1)
    self.examples = examples
    # Which embedded input the maps are over, checked on shapes only (no compute).
    abstract = exp.abstract_state
    shapes = jax.eval_shape(self.logits.embed, model_variables(abstract.params,
                                                               abstract.model_state),
                            jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype),
                                         {k: v for k, v in examples.items()
                                          if k != "mask"}))
    if options.modality not in shapes:
      raise ConfigError(f"{self.key}.modality={options.modality!r} is not an input the "
                        f"model embeds; it embeds {sorted(shapes)}.")
    if len(shapes[options.modality].shape) != 4:
      raise ConfigError(f"{self.key}: maps and deletion curves are over images [B, H, W, "
                        f"C]; {options.modality!r} is {shapes[options.modality].shape}.")
    self.attribute = jax.jit(functools.partial(self._attribute, options.modality),
                             static_argnames=("method",))
    self.key_rng = jax.random.PRNGKey(exp.config.train.seed + 17)

  def _attribute(self, modality, variables, inputs, target, key, *, method):
    logits_fn = lambda x: self.logits(variables, {**inputs, modality: x})
    x = inputs[modality]
    baseline = methods.make_baseline(self.cfg.baseline, x, key)
    attributions = methods.attribute(
        method, logits_fn, x, target, key=key, baseline=baseline, steps=self.cfg.ig_steps,
        samples=self.cfg.smoothgrad_samples, sigma=self.cfg.smoothgrad_sigma)
    gap = methods.completeness_gap(logits_fn, x, target, attributions, baseline)
    return attributions, gap, baseline

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    cfg = self.cfg
    variables = model_variables(params, model_state)
    inputs = jax.tree.map(jnp.asarray, self.logits.inputs(variables, self.examples,
                                                          self.batch_size))
    # The jitted encode: the deletion curves call it 2 * (deletion_steps + 1) times per
    # method.
    logits_fn = lambda z: self.logits.encode(variables, {**inputs, cfg.modality: z})[
        "logits"]
    x = np.asarray(inputs[cfg.modality])
    logits = np.asarray(self.logits(variables, inputs))   # a ConfigError without logits
    target = logits.argmax(-1) if cfg.target == "predicted" else self.labels
    target = target.astype(np.int32)
    metrics, maps, baseline = {}, {}, None
    for method in cfg.methods:
      attributions, gap, baseline = self.attribute(variables, inputs, jnp.asarray(target),
                                                   self.key_rng, method=method)
      maps[method] = attributions = np.asarray(attributions)
      curve = faithfulness.curves(logits_fn, x, target, attributions,
                                  baseline=np.asarray(baseline), steps=cfg.deletion_steps)
      metrics[f"{method}/deletion_auc"] = faithfulness.auc(curve["deletion"])
      metrics[f"{method}/insertion_auc"] = faithfulness.auc(curve["insertion"])
      mass = np.abs(attributions).sum(-1)
      strokes = x.max(-1) > cfg.foreground_threshold
      metrics[f"{method}/foreground_share"] = float(
          (mass * strokes).sum() / max(mass.sum(), 1e-12))
      if method == "integrated_gradients":
        gap = np.asarray(gap)
        metrics[f"{method}/completeness_gap"] = float(gap.mean())
        metrics[f"{method}/completeness_gap_max"] = float(gap.max())
    cascades = {}
    if cfg.randomization:
      cascades = self._randomization(variables, inputs, target, maps)
      for method, cascade in cascades.items():
        final = cascade[-1]
        metrics[f"{method}/randomized_rank_correlation"] = final
        metrics[f"{method}/randomization_passed"] = float(
            final < cfg.randomization_threshold)
        if final >= cfg.randomization_threshold:
          logging.warning("%s at step %d: %s maps of the fully randomised model still "
                          "correlate %.2f with the trained model's: they do not show "
                          "what the model learned (Adebayo et al. 2018).", self.key, step,
                          method, final)
    rand = faithfulness.curves(logits_fn, x, target, np.ones_like(x),
                               baseline=np.asarray(baseline), steps=cfg.deletion_steps,
                               random_seed=step)
    metrics["random/deletion_auc"] = faithfulness.auc(rand["deletion"])
    metrics["random/insertion_auc"] = faithfulness.auc(rand["insertion"])
    if jax.process_index() == 0:
      out_dir = self.output_dir("attributions")
      os.makedirs(out_dir, exist_ok=True)
      with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump({"step": step, "methods": list(cfg.methods), "target": cfg.target,
                   "baseline": cfg.baseline, "metrics": metrics,
                   "randomization_cascade": cascades}, f, indent=2)
      png = os.path.join(out_dir, f"step_{step}.png")
      _heatmaps(png, x[:cfg.pictures], {m: a[:cfg.pictures] for m, a in maps.items()},
                target[:cfg.pictures])
      self.add_picture("heatmaps", png)
    return metrics


  def _randomization(self, variables, inputs, target, maps) -> dict[str, list[float]]:
    """{method: [rank correlation with the trained maps after randomising the top 1, 2,
    ..., all modules]}."""
    params = variables["params"]
    out = {m: [] for m in maps}
    for layers in range(1, len(params) + 1):
      random_params = faithfulness.randomize_from_top(params, layers, self.key_rng)
      random_vars = {**variables, "params": random_params}
      for method, trained in maps.items():
        attributions, _, _ = self.attribute(random_vars, inputs, jnp.asarray(target),
                                            self.key_rng, method=method)
        out[method].append(faithfulness.spearman(trained, np.asarray(attributions)))
    return out


def _heatmaps(path: str, images: np.ndarray, maps: dict, target: np.ndarray) -> None:
  """A grid: each row an input and its |attribution| per method (own colour scale)."""
  # Figure + FigureCanvasAgg, as mmjax.evals.report: no global backend or pyplot state.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  rows, cols = len(images), 1 + len(maps)
  fig = Figure(figsize=(1.6 * cols, 1.6 * rows))
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, cols, squeeze=False)
  for i in range(rows):
    img = images[i]
    axes[i, 0].imshow(img[..., 0] if img.shape[-1] == 1 else np.clip(img, 0, 1),
                      cmap="gray")
    axes[i, 0].set_title(f"target {target[i]}", fontsize=7)
    for j, (name, a) in enumerate(maps.items(), start=1):
      axes[i, j].imshow(np.abs(a[i]).sum(-1), cmap="inferno")
      if i == 0:
        axes[i, j].set_title(name.replace("_", " "), fontsize=7)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
