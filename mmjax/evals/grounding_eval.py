"""Caption grounding with each eval (`type: caption_grounding`): which image patches each
word of a greedily decoded caption attends to (mmjax/explain/grounding.py), and whether
the words look at the digit more than chance.

A word's map is the mean of its tokens' maps (for bytes, its characters'): each sums to 1
over the patches. Metrics (after the prefix):
  'stroke_share'                 mean over the generated words of their attention mass on
                                 the patches holding any pixel above
                                 `foreground_threshold` (the strokes);
  'stroke_share_uniform'         the same for uniform attention (the share of stroke
                                 patches, averaged over the same words): the chance level;
  'digit_word/stroke_share', 'digit_word/stroke_share_uniform'
                                 the same over the words that name a digit ('seven', '7');
  'digit_word/fraction'          the share of captions with such a word (0: the two above
                                 are NaN);
  'words_per_caption'            (0 early in training, when the decoder emits only spaces:
                                 then every share is NaN, with a warning).
Files (`output_dir('grounding')`): step_N.json (captions, per word its share, its top
patches and uniform share; the metrics) and step_N.png (per picture row the image and one
heatmap per word, titled with it), shown in TensorBoard as '<name>/grounding'.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
from absl import logging

from mmjax import figures
from mmjax.errors import ConfigError
from mmjax.evals import decoding
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, in_chunks, model_variables
from mmjax.explain import grounding


@register_evaluator("caption_grounding")
class CaptionGroundingEvaluator(Evaluator):
  """See the module docstring. `max_len`: decoded tokens, BOS included (0 = the model's
  max_len); `tokenizer` / `sp_model` as the `caption` evaluator's."""
  options = dict(num_examples=16, pictures=4, max_len=0, foreground_threshold=0.5,
                 tokenizer="bytes", sp_model="")

  @classmethod
  def check_options(cls, options, key, config):
    if options.num_examples < 1:
      raise ConfigError(f"{key}.num_examples={options.num_examples} must be positive.")
    if not 0 <= options.pictures <= options.num_examples:
      raise ConfigError(f"{key}.pictures={options.pictures} must be in [0, num_examples="
                        f"{options.num_examples}] (rows of the picture; 0 = none).")
    if options.max_len != 0 and options.max_len < 2:
      raise ConfigError(f"{key}.max_len={options.max_len} must be >= 2 (BOS and one "
                        "token) or 0 (the model's max_len).")
    if not 0.0 <= options.foreground_threshold < 1.0:
      raise ConfigError(f"{key}.foreground_threshold={options.foreground_threshold} must "
                        "be in [0, 1): pixels are in [0, 1], and a stroke is above it.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg = options
    model = exp.model
    if getattr(model, "caption_depth", 0) <= 0:
      raise ConfigError(
          f"{self.key} reads the caption decoder's cross-attention, but the model has "
          f"none: set config.model.caption_depth > 0 (model.name='multimodal'; "
          f"configs/quickstart.py has caption_depth=1), or remove {self.key}.")
    if model.caption_source != "image":
      raise ConfigError(f"{self.key} draws its maps over images, but config.model."
                        f"caption_source={model.caption_source!r}: set it to 'image'.")
    self.max_len = cfg.max_len or model.max_len
    if self.max_len > model.max_len:
      raise ConfigError(f"{self.key}.max_len={cfg.max_len} exceeds config.model.max_len="
                        f"{model.max_len}, the decoder's positions.")
    from mmjax.data import tokenizers   # pylint: disable=g-import-not-at-top
    from mmjax.data.embedded import digits   # pylint: disable=g-import-not-at-top  # TF
    self.tokenizer = tokenizers.make_tokenizer(cfg.tokenizer, cfg.sp_model or None)
    # The words that name a digit in the embedded digits' captions ('seven', '7').
    self.digit_names = frozenset(digits.WORDS) | frozenset(str(d) for d in range(10))
    self.model = exp.model_logits
    examples = eval_examples(self.data_config, cfg.num_examples, self.batch_size,
                             require_label=False)
    if "image" not in examples:
      raise ConfigError(f"{self.key} needs eval images ('image' in config.data."
                        f"preprocess_eval); the examples have {sorted(examples)}.")
    self.images = np.asarray(examples["image"], np.float32)
    self.labels = examples.get("label")
    # Chunks no bigger than the examples: a 250-row eval batch would decode 16 + 234
    # padding rows.
    self.chunk = min(self.batch_size, len(self.images))
    self.decode = jax.jit(functools.partial(_greedy_captions, model, self.max_len,
                                            self.tokenizer.eos_id))
    self.ground = jax.jit(functools.partial(grounding.caption_grounding, model,
                                            eos_id=self.tokenizer.eos_id))
    self.grid, self.patch = grounding.patch_grid(model)
    self.to_pixels = functools.partial(grounding.to_pixels, model)

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    cfg = self.cfg
    variables = model_variables(params, model_state)
    x = self.model.inputs(variables, {"image": self.images}, self.chunk)
    tokens = in_chunks(lambda chunk: self.decode(variables, chunk), x, self.chunk)
    maps = in_chunks(lambda c: self.ground(variables, c["x"], c["tokens"]),
                     {"x": x, "tokens": tokens}, self.chunk)          # [N,T,S]
    strokes = grounding.foreground_patches(self.images, self.patch,
                                           cfg.foreground_threshold)  # [N,S]
    captions = decoding.decode_texts(tokens, self.tokenizer)
    per_example = [self._words(tokens[i], maps[i], strokes[i]) for i in range(len(maps))]
    metrics = _metrics(per_example)
    if not metrics["words_per_caption"]:
      logging.warning("%s at step %d: the captions hold no words (e.g. %r), so the shares "
                      "are NaN; a decoder this early in training emits only spaces.",
                      self.key, step, captions[0])
    if jax.process_index() == 0:
      out_dir = self.output_dir("grounding")
      os.makedirs(out_dir, exist_ok=True)
      # The maps themselves stay out of the JSON: the picture shows them.
      examples = [{"caption": caption,
                   "words": [{k: v for k, v in w.items() if k != "map"} for w in ws]}
                  for caption, ws in zip(captions, per_example)]
      if self.labels is not None:
        for example, label in zip(examples, self.labels):
          example["label"] = int(label)
      with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump({"step": step, "foreground_threshold": cfg.foreground_threshold,
                   "patch_grid": list(self.grid), "metrics": metrics,
                   "examples": examples}, f, indent=2)
      if cfg.pictures:
        png = os.path.join(out_dir, f"step_{step}.png")
        _draw(png, self.images[:cfg.pictures],
              [[(w["word"], self.to_pixels(w["map"][None, None])[0, 0]) for w in ws]
               for ws in per_example[:cfg.pictures]])
        self.add_picture("grounding", png)
    logging.info("caption grounding at step %d: stroke share %.3f (uniform %.3f), e.g. "
                 "%r", step, metrics["stroke_share"], metrics["stroke_share_uniform"],
                 captions[0])
    return metrics

  def _words(self, tokens: np.ndarray, maps: np.ndarray, strokes: np.ndarray
             ) -> list[dict]:
    """One caption's words, each with its map [S] (mean of its tokens'), its share on
    the stroke patches, the uniform share and its top patches (row-major indices)."""
    out = []
    uniform = float(strokes.mean())
    for word, positions in grounding.words(tokens, self.tokenizer):
      m = maps[positions].mean(0)
      out.append({"word": word, "map": m, "stroke_share": float(m[strokes].sum()),
                  "stroke_share_uniform": uniform,
                  "names_digit": word.strip(".,;:!?").lower() in self.digit_names,
                  "top_patches": [int(p) for p in np.argsort(-m, kind="stable")[:3]]})
    return out


def _metrics(per_example: list[list[dict]]) -> dict[str, float]:
  """The metrics of the module docstring from every caption's `_words`."""
  everything = [w for ws in per_example for w in ws]
  digit = [w for w in everything if w["names_digit"]]
  mean = lambda ws, k: float(np.mean([w[k] for w in ws])) if ws else float("nan")
  return {"stroke_share": mean(everything, "stroke_share"),
          "stroke_share_uniform": mean(everything, "stroke_share_uniform"),
          "digit_word/stroke_share": mean(digit, "stroke_share"),
          "digit_word/stroke_share_uniform": mean(digit, "stroke_share_uniform"),
          "digit_word/fraction": float(np.mean([any(w["names_digit"] for w in ws)
                                                for ws in per_example])),
          "words_per_caption": float(np.mean([len(ws) for ws in per_example]))}


def _greedy_captions(model, max_len, eos_id, variables, inputs):
  """Embedded images [B,...] -> greedy caption tokens [B, max_len] (BOS ... EOS PAD)."""
  memory, mask = model.apply(variables, inputs, method="caption_memory", train=False)
  logits_fn = lambda state, tokens: model.apply(
      variables, state["memory"], state["mask"], tokens, method="caption_logits",
      train=False)
  return decoding.greedy_decode(logits_fn, {"memory": memory, "mask": mask},
                                batch_size=memory.shape[0], max_len=max_len,
                                eos_id=eos_id)


def _draw(path: str, images: np.ndarray, rows: list[list[tuple[str, np.ndarray]]]
          ) -> None:
  """Per row: the image [H,W,C], then each word's pixel map [H,W] (own colour scale)
  over the faded image, titled with the word."""
  cols = 1 + max([len(r) for r in rows] + [1])
  fig = figures.new_figure(1.3 * cols, 1.45 * len(rows))
  axes = fig.subplots(len(rows), cols, squeeze=False)
  for i, (image, words) in enumerate(zip(images, rows)):
    gray = image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1).mean(-1)
    axes[i, 0].imshow(gray, cmap="gray", vmin=0, vmax=1)
    axes[i, 0].set_title("image", fontsize=7)
    for j, (word, heat) in enumerate(words, start=1):
      axes[i, j].imshow(gray, cmap="gray", vmin=0, vmax=1)
      axes[i, j].imshow(heat, cmap="inferno", alpha=0.6, interpolation="nearest")
      axes[i, j].set_title(word, fontsize=7)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
