"""Caption grounding: which source patches each generated caption token (and word) looked
at, read from the text decoder's cross-attention.

The caption is run once more through `caption_logits`, teacher-forced on the tokens the
decoder generated, with the attention probabilities sown (mmjax.models.layers). The
decoder is causal, so the cross-attention of query position t - 1 in that run is exactly
the one that chose token t during decoding. Each generated token's map is that row,
averaged over heads and decoder layers: a distribution over the S source tokens (image
patches, row-major as `layers.patchify`). `to_pixels` spreads it over the image, and
`words` groups tokens into the caption's words (byte tokens are characters).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.tokenizers import EOS
from mmjax.errors import ConfigError
from mmjax.explain import rollout


def check_decoder(model) -> None:
  """ConfigError unless `model` has a caption decoder whose cross-attention to read."""
  if getattr(model, "caption_depth", 0) <= 0:
    raise ConfigError(
        f"Caption grounding reads a text decoder's cross-attention, but "
        f"{type(model).__name__} has none (caption_depth="
        f"{getattr(model, 'caption_depth', 0)}): use the multimodal model with "
        "config.model.caption_depth > 0 (configs/quickstart.py has 1).")


def caption_grounding(model, variables, inputs: dict, tokens: jax.Array, *,
                      eos_id: int = EOS) -> jax.Array:
  """Per generated token, the cross-attention over the caption source's tokens.

  Args:
    model: a multimodal model with `caption_depth` > 0.
    variables: its variables ({'params': ..., other collections}).
    inputs: embedded inputs (`model.embed`) holding the caption source, leaves [B, ...].
    tokens: generated ids [B,T] as the decoders lay them out: [BOS, tokens..., EOS,
      PAD...] (T <= model.max_len).
    eos_id: the tokenizer's EOS (the byte tokenizer's by default).
  Returns:
    maps [B,T,S] float32: row t is the attention, averaged over heads and decoder
    layers, of the step that generated token t (query position t - 1); it sums to 1
    over the S source tokens for t = 1 .. the first EOS (included) and is 0 for BOS and
    the PAD after EOS, which nothing generated.
  """
  check_decoder(model)
  memory, memory_mask = model.apply(variables, inputs, method="caption_memory",
                                    train=False)
  _, state = model.apply(variables, memory, memory_mask, tokens, method="caption_logits",
                         train=False, mutable=["intermediates"])
  found = rollout.sown_attentions(state["intermediates"], scope="cross_attn")
  # [B,T,S]: query position q read the source to choose token q + 1.
  reading = jnp.stack([a.astype(jnp.float32).mean(axis=1) for a in found]).mean(axis=0)
  maps = jnp.pad(reading[:, :-1], ((0, 0), (1, 0), (0, 0)))
  return maps * generated_mask(tokens, eos_id)[..., None]


def generated_mask(tokens: jax.Array, eos_id: int) -> jax.Array:
  """[B,T] float32: 1 at the positions a decoder generated, 1 .. the first EOS included
  (to the end of the row when it has none); 0 at BOS and after EOS."""
  tokens = jnp.asarray(tokens)
  is_eos = (tokens == eos_id).at[:, 0].set(False)
  # Positions up to and including the first EOS: no EOS strictly before them.
  before = jnp.cumsum(is_eos, axis=1) - is_eos
  return ((before == 0) & (jnp.arange(tokens.shape[1]) > 0)[None]).astype(jnp.float32)


def patch_grid(model) -> tuple[tuple[int, int], tuple[int, int]]:
  """((rows, cols), (ph, pw)) of the model's image patches."""
  ph, pw = model._patch("image")   # pylint: disable=protected-access
  return (model.image_size // ph, model.image_size // pw), (ph, pw)


def to_pixels(model, maps: np.ndarray) -> np.ndarray:
  """maps [B,T,S] over the image patches -> pixel maps [B,T,H,W]: each pixel carries its
  patch's weight shared evenly among the patch's pixels (so every map keeps its sum).
  ConfigError when S is not the model's image patch count (an audio caption source)."""
  maps = np.asarray(maps)
  (gh, gw), patch = patch_grid(model)
  b, t, s = maps.shape
  if s != gh * gw:
    raise ConfigError(f"Caption grounding maps over {s} source tokens, but the model's "
                      f"{model.image_size}px images have {gh}x{gw} patches: pixel maps "
                      "need config.model.caption_source='image'.")
  pixels = np.asarray(rollout.patches_to_pixels(maps.reshape(b * t, s), (gh, gw), patch,
                                                1))
  return pixels[..., 0].reshape(b, t, gh * patch[0], gw * patch[1])


def foreground_patches(images: np.ndarray, patch: tuple[int, int], threshold: float
                       ) -> np.ndarray:
  """images [B,H,W,C] -> [B,S] bool, row-major as `layers.patchify`: the patches holding
  any pixel (any channel) above `threshold` (on the digits: the strokes)."""
  images = np.asarray(images)
  b, h, w, _ = images.shape
  ph, pw = patch
  on = images.max(-1).reshape(b, h // ph, ph, w // pw, pw) > threshold
  return on.any(axis=(2, 4)).reshape(b, -1)


def words(tokens: Sequence[int], tokenizer) -> list[tuple[str, list[int]]]:
  """One decoded caption row [T] ([BOS, ..., EOS, PAD...]) -> [(word, positions)]: its
  whitespace-separated words, each with the positions (indices into the row) of the
  tokens whose text falls in it. A token's text is what decoding the row up to it adds,
  so this holds for bytes and SentencePiece alike."""
  row = [int(i) for i in tokens]
  end = row.index(tokenizer.eos_id, 1) if tokenizer.eos_id in row[1:] else len(row)
  text, owner = "", []   # owner[c]: the positions whose tokens wrote character c
  for pos in range(1, end):
    decoded = tokenizer.decode(row[1:pos + 1])
    keep = len(_common_prefix(text, decoded))
    # A multi-byte character completed (or a piece merged): the rewritten characters
    # belong to the tokens that began them as well as to this one.
    rewritten = sorted({p for ps in owner[keep:] for p in ps})
    owner = owner[:keep] + [rewritten + [pos]] * (len(decoded) - keep)
    text = decoded
  out, current, positions = [], "", []
  for char, ps in zip(text, owner):
    if char.isspace():
      if current:
        out.append((current, positions))
      current, positions = "", []
    else:
      current += char
      positions.extend(p for p in ps if p not in positions)
  if current:
    out.append((current, positions))
  return out


def _common_prefix(a: str, b: str) -> str:
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return a[:n]
