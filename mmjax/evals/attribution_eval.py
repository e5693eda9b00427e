"""Attributions with each eval (`type: attribution`): which elements of `modality` (the
pixels of 'image', the tokens of 'text', the time-frequency bins of 'spectrogram') the
model's decision rests on, by each of `methods` (mmjax/explain/methods.py, and
'attention_rollout', mmjax/explain/rollout.py), with faithfulness scores and pictures.

Metrics (after the prefix), per method m: 'm/deletion_auc' and 'm/insertion_auc' (mean
target probability along the deletion / insertion curves; a faithful map deletes low and
inserts high), 'm/foreground_share' (the share of |attribution| on the input's strokes,
values above `foreground_threshold`: on digits, how much of the map sits on the digit);
'random/deletion_auc' and 'random/insertion_auc' (the same curves for a random ranking,
the reference); for integrated gradients 'integrated_gradients/completeness_gap' (mean
relative |sum of attributions - (f(x) - f(x'))|) and its max. Text maps are read per
token (deletion removes whole token embeddings); 'foreground_share' is for images only.
Files (`output_dir('attributions')`): step_N.json, and step_N.png (the inputs and each
method's heatmap, `pictures` rows) or for text step_N.html and step_N.png (the tokens
shaded by attribution).

With `modality_shares` and a model that embeds more than one of image, text and
spectrogram: 'modality_share/K' (the mean share of |contribution| that input K carries,
by integrated gradients over all of them at once from zeros; the shares sum to 1),
'modality_contribution/K' (its mean signed contribution to the target logit) and
'modality_shares/completeness_gap'; a bar chart step_N_shares.png.

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
from mmjax.explain import faithfulness, methods, pictures, rollout

ROLLOUT = "attention_rollout"
METHODS = methods.METHODS + (ROLLOUT,)
# The input kind of each modality the evaluator explains, and the rank of its embedding.
KINDS = {"image": 4, "spectrogram": 3, "text": 3}
# Methods whose attributions are signed contributions (a token's score is their sum over
# the embedding); the others are sensitivities (a token's score is their L2 norm).
SIGNED = ("gradient_x_input", "integrated_gradients", "occlusion", ROLLOUT)


@register_evaluator("attribution")
class AttributionEvaluator(Evaluator):
  """See the module docstring."""
  options = dict(methods=("gradient", "smoothgrad", "integrated_gradients"),
                 modality="image", num_examples=32, target="predicted", baseline="zeros",
                 ig_steps=64, smoothgrad_samples=16, smoothgrad_sigma=0.15,
                 deletion_steps=20, foreground_threshold=0.5, pictures=8,
                 randomization=True, randomization_threshold=0.5,
                 occlusion_window=(), occlusion_stride=(), rollout_residual=0.5,
                 modality_shares=True, shares_steps=256, tokenizer="bytes",
                 tokenizer_path="")
  choices = {"target": ("predicted", "label"), "baseline": methods.BASELINES}

  @classmethod
  def check_options(cls, options, key, config):
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown or not options.methods:
      raise ConfigError(f"{key}.methods={tuple(options.methods)!r}: unknown {unknown}; "
                        f"choose from {', '.join(METHODS)}.")
    for name in ("ig_steps", "smoothgrad_samples", "deletion_steps", "num_examples",
                 "shares_steps"):
      methods.check_positive(f"{key}.{name}", options[name])
    if options.smoothgrad_sigma <= 0:
      raise ConfigError(f"{key}.smoothgrad_sigma={options.smoothgrad_sigma} must be > 0.")
    if not 0.0 <= options.rollout_residual < 1.0:
      raise ConfigError(f"{key}.rollout_residual={options.rollout_residual} must be in "
                        "[0, 1): the weight of the residual path (0.5 in Abnar & Zuidema).")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    self.logits = exp.model_logits
    self.model = exp.model
    examples = eval_examples(self.data_config, options.num_examples, self.batch_size)
    self.labels = np.asarray(examples.pop("label")).astype(np.int32).reshape(-1)
    self.examples = examples
    # What the maps are over, checked on shapes only (no compute).
    abstract = exp.abstract_state
    variables = model_variables(abstract.params, abstract.model_state)
    shapes = jax.eval_shape(self.logits.embed, variables,
                            jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype),
                                         {k: v for k, v in examples.items()
                                          if k != "mask"}))
    modality = options.modality
    if modality not in shapes:
      raise ConfigError(f"{self.key}.modality={modality!r} is not an input the "
                        f"model embeds; it embeds {sorted(shapes)}.")
    shape = shapes[modality].shape
    if modality not in KINDS or len(shape) != KINDS[modality]:
      raise ConfigError(f"{self.key}: maps are over images [B, H, W, C], token "
                        f"embeddings 'text' [B, T, D] or 'spectrogram' [B, F, T]; "
                        f"{modality!r} is {shape}.")
    outputs = jax.eval_shape(self.logits.encode, variables, shapes)
    if "logits" not in outputs:
      raise ConfigError(f"{self.key}: attributions explain a class logit, but the model "
                        f"returns only {sorted(outputs)}; set config.model.num_classes "
                        "> 0 (a classifier or a probe head), or drop this evaluator.")
    if ROLLOUT in options.methods:
      rollout.check_supported(self.model, modality)
    self.window, self.stride = self._occlusion_window(shape[1:])
    # Every float input of the known kinds: the candidates for per-modality shares.
    self.share_keys = tuple(k for k in KINDS if k in shapes
                            and jnp.issubdtype(shapes[k].dtype, jnp.floating))
    self.attribute = jax.jit(functools.partial(self._attribute, modality),
                             static_argnames=("method",))
    self.shares = jax.jit(self._shares)
    self.rollout = jax.jit(functools.partial(rollout.rollout_map, self.model,
                                             modality=modality,
                                             residual=options.rollout_residual))
    self.key_rng = jax.random.PRNGKey(exp.config.train.seed + 17)
    self.tokenizer = None
    if modality == "text":
      from mmjax.data import tokenizers
      self.tokenizer = tokenizers.make_tokenizer(options.tokenizer,
                                                 options.tokenizer_path or None)

  def _occlusion_window(self, shape) -> tuple[tuple, tuple]:
    """The occlusion window and stride for an example of `shape` (no batch dim), checked:
    the options, or by default about a 7x7 grid of windows over an image, 8x7 over a
    spectrogram, and one token at a time over text."""
    cfg = self.cfg
    if cfg.occlusion_window:
      window = tuple(cfg.occlusion_window)
    elif cfg.modality == "image":
      window = (max(1, shape[0] // 7), max(1, shape[1] // 7), 0)
    elif cfg.modality == "spectrogram":
      window = (max(1, shape[0] // 8), max(1, shape[1] // 7))
    else:
      window = (1, 0)
    stride = tuple(cfg.occlusion_stride) or window
    if "occlusion" in cfg.methods:
      try:
        methods.occlusion_windows(tuple(shape), window, stride)
      except ConfigError as e:
        raise ConfigError(f"{self.key}.occlusion_window / occlusion_stride: {e}") from None
    return window, stride

  def _attribute(self, modality, variables, inputs, target, key, *, method):
    logits_fn = lambda x: self.logits(variables, {**inputs, modality: x})
    x = inputs[modality]
    baseline = methods.make_baseline(self.cfg.baseline, x, key)
    attributions = methods.attribute(
        method, logits_fn, x, target, key=key, baseline=baseline, steps=self.cfg.ig_steps,
        samples=self.cfg.smoothgrad_samples, sigma=self.cfg.smoothgrad_sigma,
        window=self.window, stride=self.stride)
    # Completeness is IG's axiom; the other methods have no gap to report.
    gap = (methods.completeness_gap(logits_fn, x, target, attributions, baseline)
           if method == "integrated_gradients" else None)
    return attributions, gap

  def _maps(self, variables, inputs, target, method
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """One method's attributions [N, ...] like inputs[modality] (numpy), and for
    integrated gradients its completeness gap [N] (else None)."""
    if method == ROLLOUT:
      return np.asarray(self.rollout(variables, inputs)), None
    attributions, gap = self.attribute(variables, inputs, jnp.asarray(target),
                                       self.key_rng, method=method)
    return np.asarray(attributions), None if gap is None else np.asarray(gap)

  def _shares(self, variables, inputs, target):
    return methods.modality_contributions(
        lambda z: self.logits(variables, z), inputs, target, self.share_keys,
        steps=self.cfg.shares_steps)

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    cfg = self.cfg
    variables = model_variables(params, model_state)
    inputs = jax.tree.map(jnp.asarray, self.logits.inputs(variables, self.examples,
                                                          self.batch_size))
    logits = np.asarray(self.logits(variables, inputs))
    target = logits.argmax(-1) if cfg.target == "predicted" else self.labels
    target = target.astype(np.int32)
    x = np.asarray(inputs[cfg.modality])
    baseline = np.asarray(methods.make_baseline(cfg.baseline, jnp.asarray(x), self.key_rng))
    curves = self._curves(variables, inputs, x, target, baseline)
    metrics, maps, gaps = {}, {}, {}
    for method in cfg.methods:
      maps[method], gap = self._maps(variables, inputs, target, method)
      if gap is not None:
        gaps[method] = gap
      curve = curves(maps[method])
      metrics[f"{method}/deletion_auc"] = faithfulness.auc(curve["deletion"])
      metrics[f"{method}/insertion_auc"] = faithfulness.auc(curve["insertion"])
      if cfg.modality == "image":
        mass = np.abs(maps[method]).sum(-1)
        strokes = x.max(-1) > cfg.foreground_threshold
        metrics[f"{method}/foreground_share"] = float(
            (mass * strokes).sum() / max(mass.sum(), 1e-12))
    for method, gap in gaps.items():
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
    rand = curves(np.ones_like(x), random_seed=step)
    metrics["random/deletion_auc"] = faithfulness.auc(rand["deletion"])
    metrics["random/insertion_auc"] = faithfulness.auc(rand["insertion"])
    shares = {}
    if cfg.modality_shares and len(self.share_keys) > 1:
      shares = self._modality_shares(variables, inputs, target, metrics)
    if jax.process_index() == 0:
      self._write(step, metrics, cascades, x, maps, target, shares)
    return metrics

  def _curves(self, variables, inputs, x, target, baseline):
    """attributions [N, ...] (, random_seed) -> the deletion and insertion curves over
    the modality's features: pixels (channels summed), tokens (embedding summed), or
    time-frequency bins (spectrograms get a unit channel axis)."""
    modality, steps = self.cfg.modality, self.cfg.deletion_steps
    # The jitted encode: the curves call it 2 * (deletion_steps + 1) times per method.
    encode = lambda z: self.logits.encode(variables, {**inputs, modality: z})["logits"]
    if modality == "spectrogram":
      return lambda a, random_seed=None: faithfulness.curves(
          lambda z: encode(z[..., 0]), x[..., None], target, a[..., None],
          baseline=baseline[..., None], steps=steps, random_seed=random_seed)
    return lambda a, random_seed=None: faithfulness.curves(
        encode, x, target, a, baseline=baseline, steps=steps, random_seed=random_seed)

  def _modality_shares(self, variables, inputs, target, metrics) -> dict[str, float]:
    contributions, gap = self.shares(variables, inputs, jnp.asarray(target))
    magnitude = np.stack([np.abs(np.asarray(contributions[k])) for k in self.share_keys])
    per_example = magnitude / np.maximum(magnitude.sum(0, keepdims=True), 1e-12)
    shares = {}
    for i, k in enumerate(self.share_keys):
      shares[k] = float(per_example[i].mean())
      metrics[f"modality_share/{k}"] = shares[k]
      metrics[f"modality_contribution/{k}"] = float(np.asarray(contributions[k]).mean())
    metrics["modality_shares/completeness_gap"] = float(np.asarray(gap).mean())
    return shares

  def _write(self, step, metrics, cascades, x, maps, target, shares) -> None:
    """step_N.json, the pictures (PNG, and HTML for text) and their TensorBoard images."""
    cfg = self.cfg
    out_dir = self.output_dir("attributions")
    os.makedirs(out_dir, exist_ok=True)
    record = {"step": step, "modality": cfg.modality, "methods": list(cfg.methods),
              "target": cfg.target, "baseline": cfg.baseline, "metrics": metrics,
              "randomization_cascade": cascades}
    png = os.path.join(out_dir, f"step_{step}.png")
    rows = slice(0, cfg.pictures)
    if cfg.modality == "text":
      tokens = self._token_strings(rows)
      scores = {m: self._token_scores(m, a[rows]) for m, a in maps.items()}
      record["tokens"] = [{"tokens": t, **{m: s[i, :len(t)].tolist()
                                            for m, s in scores.items()}}
                          for i, t in enumerate(tokens)]
      pictures.token_html(os.path.join(out_dir, f"step_{step}.html"), tokens, scores,
                          target[rows])
      pictures.token_png(png, tokens, scores, target[rows])
    else:
      pictures.heatmaps(png, x[rows], {m: a[rows] for m, a in maps.items()}, target[rows])
    self.add_picture("heatmaps", png)
    if shares:
      bars = os.path.join(out_dir, f"step_{step}_shares.png")
      pictures.share_bars(bars, shares, f"{self.key}: share of the target logit, step "
                          f"{step}")
      self.add_picture("modality_shares", bars)
    with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
      json.dump(record, f, indent=2)

  def _token_strings(self, rows: slice) -> list[list[str]]:
    """The real tokens of the first examples as strings (special tokens by name)."""
    tok = self.tokenizer
    names = {tok.bos_id: "<s>", tok.eos_id: "</s>", tok.pad_id: "<pad>"}
    ids = np.asarray(self.examples["text"])[rows]
    mask = np.asarray(self.examples.get("text_mask", np.ones_like(ids)))[rows]
    return [[names.get(int(i)) or tok.decode([int(i)]) for i, m in zip(row, mrow) if m]
            for row, mrow in zip(ids, mask)]

  @staticmethod
  def _token_scores(method: str, attributions: np.ndarray) -> np.ndarray:
    """[R, T, D] -> [R, T]: the sum over the embedding for signed contributions, its L2
    norm for sensitivities (gradient, SmoothGrad)."""
    if method in SIGNED:
      return attributions.sum(-1)
    return np.sqrt((attributions ** 2).sum(-1))

  def _randomization(self, variables, inputs, target, maps) -> dict[str, list[float]]:
    """{method: [rank correlation with the trained maps after randomising the top 1, 2,
    ..., all modules]}."""
    params = variables["params"]
    out = {m: [] for m in maps}
    for layers in range(1, len(params) + 1):
      random_params = faithfulness.randomize_from_top(params, layers, self.key_rng)
      random_vars = {**variables, "params": random_params}
      for method, trained in maps.items():
        attributions, _ = self._maps(random_vars, inputs, target, method)
        out[method].append(faithfulness.spearman(trained, attributions))
    return out
