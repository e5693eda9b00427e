"""What a multimodal model learned, measured with each trainer eval.

  type retrieval   cross-modal recall@K between modality pairs, each modality encoded
                   alone (so a fused stream cannot copy the answer across), class-level
                   when `by_label` (the digits' captions and tones are per class).
  type probe       a linear probe (multinomial logistic regression) on one modality's
                   frozen pooled features, trained on the train split and tested on the
                   eval split: clean accuracy; robust accuracy under an attack through
                   encoder + probe; and the same probe on a randomly initialised encoder,
                   the baseline pretraining must beat.
  type caption     captions decoded (greedy, or beam search) from the model's
                   `caption_source`, scored by corpus BLEU against the references.

  type zero_shot   CLIP-style zero-shot classification of eval images by prompts.

Each evaluator is built once per run (examples read, probes' data fixed) and called as
`evaluator(params, model_state, step) -> {metric: float}`; metric names below are after
the entry's prefix ('<name>/'). Examples are this host's.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from mmjax.errors import ConfigError
from mmjax.evals import bleu, decoding, retrieval, robustness
from mmjax.models.multimodal import INPUT_KEY
from mmjax.objectives.adversarial import attack_specs
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, in_chunks, model_variables


def modality_inputs(inputs: dict, modality: str) -> dict:
  """The entries of embedded multimodal `inputs` that belong to one modality."""
  return {k: v for k, v in inputs.items()
          if k == INPUT_KEY[modality] or k.startswith(f"{modality}_")}


def _check_modalities(model, names, config_key: str) -> None:
  have = getattr(model, "modalities", None)
  if have is None:
    raise ConfigError(f"{config_key} needs the multimodal model (model.name="
                      "'multimodal'); unset it for this model.")
  bad = [m for m in names if m not in have]
  if bad:
    raise ConfigError(f"{config_key}: {bad} are not modalities of the model {tuple(have)}.")


def embeddings(model, variables, examples: dict, modalities, batch_size: int
               ) -> dict[str, np.ndarray]:
  """{modality: [N, P]} of numpy `examples` ([N, ...] per key), each modality encoded
  alone: its `{m}_projection` (or `{m}_pooled` without projection heads)."""
  x = model.inputs(variables, examples, batch_size)
  out = {}
  for m in modalities:
    enc = model.outputs(variables, modality_inputs(x, m), batch_size)
    out[m] = enc.get(f"{m}_projection", enc[f"{m}_pooled"])
  return out


@register_evaluator("retrieval")
class RetrievalEvaluator(Evaluator):
  """'{a}_to_{b}/R@K' for every pair, both directions, on `{m}_projection` (or
  `{m}_pooled` without projection heads); class-level when `by_label`."""
  options = dict(pairs=(), ks=(1, 5, 10), num_examples=500, by_label=True)
  required = {"pairs": "\"(('image', 'text'),)\""}

  @classmethod
  def check_options(cls, options, key, config):
    if any(not isinstance(p, (tuple, list)) or len(p) != 2 for p in options.pairs):
      raise ConfigError(f"{key}.pairs must be modality pairs, e.g. "
                        f"(('image', 'text'),), got {options.pairs!r}.")
    if options.num_examples < 1 or not options.ks or min(options.ks) < 1:
      raise ConfigError(f"{key}.num_examples and every k of {key}.ks must be positive.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg = options
    self.pairs = [tuple(p) for p in cfg.pairs]
    _check_modalities(exp.model, {m for p in self.pairs for m in p}, self.key)
    self.ks = tuple(cfg.ks)
    self.model = exp.model_logits
    self.examples = eval_examples(self.data_config, cfg.num_examples, self.batch_size,
                                  require_label=cfg.by_label)
    labels = self.examples.pop("label", None)
    self.labels = labels if cfg.by_label else None

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    del step
    z = embeddings(self.model, model_variables(params, model_state), self.examples,
                   {m for p in self.pairs for m in p}, self.batch_size)
    metrics = {}
    for a, b in self.pairs:
      r = retrieval.retrieval_metrics(z[a], z[b], names=(a, b), ks=self.ks,
                                      labels=self.labels)
      metrics.update(r)
    return metrics


# -------------------------------------------------------------------- zero-shot
@register_evaluator("zero_shot")
class ZeroShotEvaluator(Evaluator):
  """'accuracy': CLIP's zero-shot classification. Each class's text embedding
  is the normalised mean of its prompts' (`templates` filled with `class_names`,
  tokenized by the `tokenize` spec from key 'prompt'); an eval image is assigned the
  class of highest cosine similarity; labels index `class_names`."""

  options = dict(class_names=(), templates=("a photo of a {}.",), tokenize="",
                 num_examples=500)
  required = {"class_names": "\"('cat', 'dog')\"",
              "tokenize": "\"tokenize('prompt', 'text', max_len=77)\""}

  @classmethod
  def check_options(cls, options, key, config):
    templates = tuple(options.templates)
    if not templates or any("{}" not in t for t in templates):
      raise ConfigError(f"{key}.templates={templates!r} must be prompts with "
                        "'{}' where the class name goes, e.g. ('a photo of a {}.',).")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg = options
    _check_modalities(exp.model, ("image", "text"), self.key)
    names, templates = tuple(cfg.class_names), tuple(cfg.templates)
    from mmjax.data import ops   # pylint: disable=g-import-not-at-top  # TF, evals only
    import tensorflow as tf      # pylint: disable=g-import-not-at-top
    fn = ops.build_preprocess_fn(cfg.tokenize)
    prompts = [fn({"prompt": tf.constant(t.format(n))}, tf.constant([0, 0], tf.int64))
               for n in names for t in templates]
    self.prompts = {k: np.stack([np.asarray(p[k]) for p in prompts])
                    for k in ("text", "text_mask")}
    self.num_templates = len(templates)
    self.model = exp.model_logits
    examples = eval_examples(self.data_config, cfg.num_examples, self.batch_size)
    self.images, self.labels = {"image": examples["image"]}, examples["label"]
    if self.labels.max() >= len(names):
      raise ConfigError(f"{self.key}.class_names has {len(names)} names but the eval "
                        f"labels go up to {int(self.labels.max())}; name every class in "
                        "label order.")

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    del step
    variables = model_variables(params, model_state)
    text = embeddings(self.model, variables, self.prompts, ("text",), self.batch_size)["text"]
    image = embeddings(self.model, variables, self.images, ("image",),
                       self.batch_size)["image"]
    pred = retrieval.zero_shot_predictions(image, text, self.num_templates)
    return {"accuracy": float(np.mean(pred == self.labels))}


# ------------------------------------------------------------------------ probe
def fit_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                     steps: int = 500, learning_rate: float = 0.05, l2: float = 1e-4
                     ) -> dict[str, jax.Array]:
  """Multinomial logistic regression on standardised features [N,D] -> probe params
  {'mean' [D], 'scale' [D], 'w' [D,K], 'b' [K]}; full-batch Adam, `steps` steps, loss
  mean CE + l2·‖w‖²."""
  return _fit_probe(jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.int32),
                    num_classes=num_classes, steps=steps, learning_rate=learning_rate,
                    l2=l2)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps", "learning_rate", "l2"))
def _fit_probe(x, y, *, num_classes, steps, learning_rate, l2):
  mean, scale = x.mean(axis=0), 1.0 / (x.std(axis=0) + 1e-6)
  x = (x - mean) * scale
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  tx = optax.adam(learning_rate)

  def loss(p):
    ce = optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()
    return ce + l2 * jnp.sum(p["w"] ** 2)

  def step(_, carry):
    p, s = carry
    updates, s = tx.update(jax.grad(loss)(p), s)
    return optax.apply_updates(p, updates), s

  params, _ = jax.lax.fori_loop(0, steps, step, (params, tx.init(params)))
  return {"mean": mean, "scale": scale, **params}


def probe_logits(probe: dict, features: jax.Array) -> jax.Array:
  """features [B,D] -> logits [B,K] of a `fit_linear_probe` probe."""
  return ((features - probe["mean"]) * probe["scale"]) @ probe["w"] + probe["b"]


@register_evaluator("probe")
class ProbeEvaluator(Evaluator):
  """A linear probe on `modality`'s frozen pooled features (a single-modality model's
  'pooled'), trained on the first `train_examples` of the train split and tested on
  `test_examples` of the eval split: 'accuracy'; with `attack`, 'robust_accuracy' through
  encoder + probe (and under its label, 'robust/{label}'); with `random_baseline`,
  'random_init_accuracy' (the probe on the encoder at its initialisation, measured once
  per run)."""
  options = dict(modality="", train_examples=2000, test_examples=500, steps=500,
                 learning_rate=0.05, l2=1e-4, attack="", eps=0.0, norm="linf",
                 attack_steps=10, attack_step_size=0.0, random_baseline=True)
  required = {"modality": "image"}
  choices = {"modality": tuple(sorted(INPUT_KEY)),
             "attack": ("",) + robustness.EVAL_ATTACKS}

  @classmethod
  def check_options(cls, options, key, config):
    if options.attack and options.eps <= 0:
      raise ConfigError(f"{key}.attack is set but {key}.eps is not positive.")
    if options.attack_step_size < 0:
      raise ConfigError(f"{key}.attack_step_size={options.attack_step_size} must be >= 0 "
                        "(0 = the attack's default step, 2.5 eps / steps).")
    robustness.check_step_size(options.attack, options.attack_step_size,
                               f"{key}.attack_step_size")
    if min(options.train_examples, options.test_examples, options.steps) < 1:
      raise ConfigError(f"{key}.train_examples, test_examples and steps must be positive.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg = options
    self.modality = cfg.modality
    if hasattr(exp.model, "modalities"):
      _check_modalities(exp.model, (self.modality,), f"{self.key}.modality")
      self.feature_key = f"{self.modality}_pooled"
    else:   # a single-modality model (ViT, CNN, text encoder): its 'pooled' features
      self.feature_key = "pooled"
    self.model = exp.model_logits
    key = INPUT_KEY[self.modality]
    keep = lambda ex: {k: v for k, v in ex.items()
                       if k in ("label", key, f"{key}_mask")}
    train_data = exp.config.data.copy_and_resolve_references()
    train_data.eval_split = f"{exp.config.data.train_split}[:{cfg.train_examples}]"
    self.test = keep(eval_examples(self.data_config, cfg.test_examples, self.batch_size))
    if key not in self.test or "label" not in self.test:
      raise ConfigError(f"{self.key}.modality={self.modality!r} needs {key!r} and 'label' "
                        f"in the eval examples (data.preprocess_eval), which have "
                        f"{sorted(self.test)}; keep them there or change the modality.")
    self.train = keep(eval_examples(train_data, cfg.train_examples, self.batch_size))
    self.num_classes = int(max(self.train["label"].max(), self.test["label"].max())) + 1
    self.key = jax.random.PRNGKey(exp.config.train.seed + 11)
    self.random_init_accuracy = None
    # One callable per run: robustness caches its compiled attacks per callable.
    self.logits = functools.partial(_probe_on_encoder, self.model, self.feature_key)

  def _inputs(self, variables, examples) -> dict:
    """The modality's embedded inputs (numpy [N,...]) of `examples`."""
    return self.model.inputs(variables, {k: v for k, v in examples.items() if k != "label"},
                             self.batch_size)

  def _features(self, variables, inputs) -> np.ndarray:
    return self.model.outputs(variables, inputs, self.batch_size)[self.feature_key]

  def _fit(self, variables, test_inputs=None):
    """(probe, clean test accuracy) for the encoder `variables`; `test_inputs` are the
    embedded test examples when the caller has them already."""
    cfg = self.cfg
    train = self._features(variables, self._inputs(variables, self.train))
    probe = fit_linear_probe(train, self.train["label"], self.num_classes, steps=cfg.steps,
                             learning_rate=cfg.learning_rate, l2=cfg.l2)
    if test_inputs is None:
      test_inputs = self._inputs(variables, self.test)
    test = self._features(variables, test_inputs)
    pred = np.asarray(jnp.argmax(probe_logits(probe, jnp.asarray(test)), axis=-1))
    return probe, float(np.mean(pred == self.test["label"]))

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    del step
    cfg = self.cfg
    variables = model_variables(params, model_state)
    x = self._inputs(variables, self.test)   # embedded once: the probe's and the attack's
    probe, clean = self._fit(variables, x)
    metrics = {"accuracy": clean}
    if cfg.attack:
      specs = attack_specs(x, (INPUT_KEY[self.modality],), cfg.eps,
                           cfg.attack_step_size or None, config_key=self.key,
                           norm=cfg.norm)
      metrics["robust_accuracy"] = robustness.robust_accuracy(
          self.logits, x, self.test["label"], self.key, attack=cfg.attack,
          eps=specs["eps"], norm=specs["norm"], steps=cfg.attack_steps,
          step_size=specs["step_size"] if cfg.attack_step_size else None,
          bounds=specs["bounds"],
          batch_size=self.batch_size, params={"model": variables, "probe": probe})
      label = robustness.attack_label(cfg.attack, eps=cfg.eps, norm=cfg.norm,
                                      steps=cfg.attack_steps, restarts=1)
      metrics[f"robust/{label}"] = metrics["robust_accuracy"]
    if cfg.random_baseline:
      if self.random_init_accuracy is None:
        # The very parameters training started from (train.seed): the fairest baseline,
        # and init_state is compiled already.
        init = self.exp.init_state()
        self.random_init_accuracy = self._fit(
            model_variables(init.params, init.model_state))[1]
      metrics["random_init_accuracy"] = self.random_init_accuracy
    return metrics


def _probe_on_encoder(model, feature_key, variables, inputs):
  """(variables {'model', 'probe'}, one modality's inputs) -> probe logits [B,K] on the
  encoder's `feature_key` features ('{modality}_pooled', or 'pooled')."""
  out = model.model.apply(variables["model"], inputs, method="encode", train=False)
  return probe_logits(variables["probe"], out[feature_key])


# ---------------------------------------------------------------------- caption
@register_evaluator("caption")
class CaptionEvaluator(Evaluator):
  """'bleu' (corpus BLEU, sacrebleu's defaults) of captions decoded from the
  first `num_examples` eval examples; hypotheses and references of the first 20 go to
  workdir/captions/step_{N}.json."""

  options = dict(num_examples=500, beam_size=1, length_penalty=0.6, text_key="text",
                 tokenizer="bytes", sp_model="")

  @classmethod
  def check_options(cls, options, key, config):
    if options.beam_size < 1:
      raise ConfigError(f"{key}.beam_size={options.beam_size} must be >= 1 (1 = greedy).")
    if options.num_examples < 1:
      raise ConfigError(f"{key}.num_examples={options.num_examples} must be positive.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg = options
    model = exp.model
    if getattr(model, "caption_depth", 0) <= 0:
      raise ConfigError(f"{self.key} needs a model with a text decoder "
                        "(model.caption_depth > 0).")
    from mmjax.data import tokenizers
    self.tokenizer = tokenizers.make_tokenizer(cfg.tokenizer, cfg.sp_model or None)
    self.source = INPUT_KEY[model.caption_source]
    self.model = exp.model_logits
    examples = eval_examples(self.data_config, cfg.num_examples, self.batch_size,
                             require_label=False)
    if cfg.text_key not in examples or self.source not in examples:
      raise ConfigError(f"{self.key} needs eval examples with {self.source!r} and the "
                        f"reference captions {cfg.text_key!r}; they have "
                        f"{sorted(examples)}.")
    self.source_batch = {self.source: examples[self.source]}
    self.references = decoding.decode_texts(examples[cfg.text_key], self.tokenizer)
    self.decode = jax.jit(functools.partial(_decode_captions, model, cfg.beam_size,
                                            cfg.length_penalty, model.max_len))

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    variables = model_variables(params, model_state)
    x = self.model.inputs(variables, self.source_batch, self.batch_size)
    tokens = in_chunks(lambda chunk: self.decode(variables, chunk), x, self.batch_size)
    hypotheses = decoding.decode_texts(tokens, self.tokenizer)
    score = bleu.corpus_bleu(hypotheses, [self.references])
    if jax.process_index() == 0:
      out_dir = self.output_dir("captions")
      os.makedirs(out_dir, exist_ok=True)
      with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump({"step": step, "bleu": score, "samples": [
            {"hypothesis": h, "reference": r}
            for h, r in zip(hypotheses[:20], self.references[:20])]}, f, indent=2)
    logging.info("captions at step %d (BLEU %.2f), e.g. %r for %r", step, score["bleu"],
                 hypotheses[0], self.references[0])
    return {"bleu": float(score["bleu"])}


def _decode_captions(model, beam_size, length_penalty, max_len, variables, inputs):
  """Embedded source inputs [B,...] -> caption tokens [B, max_len] (BOS ... EOS PAD)."""
  memory, mask = model.apply(variables, inputs, method="caption_memory", train=False)
  logits_fn = lambda state, tokens: model.apply(
      variables, state["memory"], state["mask"], tokens, method="caption_logits",
      train=False)
  state = {"memory": memory, "mask": mask}
  b = memory.shape[0]
  if beam_size == 1:
    return decoding.greedy_decode(logits_fn, state, batch_size=b, max_len=max_len)
  return decoding.beam_search(logits_fn, state, batch_size=b, max_len=max_len,
                              beam_size=beam_size, length_penalty=length_penalty)[0]
