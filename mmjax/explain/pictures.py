"""Pictures of attributions: heatmaps over images and spectrograms, text with its tokens
shaded (HTML and PNG), and bar charts of per-modality shares (figures without pyplot:
mmjax.figures).
"""
from __future__ import annotations

import html

import numpy as np

from mmjax import figures


def heatmaps(path: str, inputs: np.ndarray, maps: dict[str, np.ndarray],
             target: np.ndarray) -> None:
  """A grid: each row an input and its |attribution| per method (own colour scale).
  inputs: images [R,H,W,C] or spectrograms [R,F,T]; maps: {method: like inputs}."""
  rows, cols = len(inputs), 1 + len(maps)
  spectrogram = inputs.ndim == 3
  fig = figures.new_figure((2.4 if spectrogram else 1.6) * cols, 1.6 * rows)
  axes = fig.subplots(rows, cols, squeeze=False)
  shown = dict(origin="lower", aspect="auto") if spectrogram else {}
  for i in range(rows):
    x = inputs[i]
    if spectrogram:
      axes[i, 0].imshow(x, cmap="magma", **shown)
    else:
      axes[i, 0].imshow(x[..., 0] if x.shape[-1] == 1 else np.clip(x, 0, 1), cmap="gray")
    axes[i, 0].set_title(f"target {target[i]}", fontsize=7)
    for j, (name, a) in enumerate(maps.items(), start=1):
      mass = np.abs(a[i]) if spectrogram else np.abs(a[i]).sum(-1)
      axes[i, j].imshow(mass, cmap="inferno", **shown)
      if i == 0:
        axes[i, j].set_title(name.replace("_", " "), fontsize=7)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)


def _shade(score: float, scale: float) -> tuple[float, float, float, float]:
  """RGBA: red for a positive score, blue for a negative one, alpha by |score|/scale."""
  alpha = float(min(abs(score) / scale, 1.0)) if scale > 0 else 0.0
  return (0.85, 0.1, 0.1, alpha) if score >= 0 else (0.1, 0.2, 0.85, alpha)


def token_html(path: str, tokens: list[list[str]], scores: dict[str, np.ndarray],
               target: np.ndarray) -> None:
  """An HTML page: for each example and method, its tokens on a background shaded by
  the token's attribution (red: for the target class, blue: against it).
  tokens: [R][T_r] strings; scores: {method: [R, T]} (positions past T_r are ignored)."""
  parts = ["<!doctype html><meta charset='utf-8'><title>token attributions</title>",
           "<style>span{padding:1px 0;font-family:monospace;white-space:pre}"
           "td{padding:2px 8px;vertical-align:top}</style><table>"]
  for i, words in enumerate(tokens):
    for name, s in scores.items():
      row = s[i, :len(words)]
      scale = float(np.abs(row).max()) if len(row) else 0.0
      spans = "".join(
          "<span style='background:rgba({},{},{},{:.2f})' title='{:.4g}'>{}</span>".format(
              *(int(255 * c) for c in _shade(v, scale)[:3]), _shade(v, scale)[3], v,
              html.escape(w)) for w, v in zip(words, row))
      parts.append(f"<tr><td>#{i} target {target[i]}</td><td>{html.escape(name)}</td>"
                   f"<td>{spans}</td></tr>")
  parts.append("</table>")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(parts))


def token_png(path: str, tokens: list[list[str]], scores: dict[str, np.ndarray],
              target: np.ndarray) -> None:
  """The picture of `token_html`: one line per example and method."""
  lines = [(i, name) for i in range(len(tokens)) for name in scores]
  # Characters of the longest example: each token's width is its share of them.
  chars = max((sum(max(len(w), 1) for w in words) for words in tokens), default=1)
  fig = figures.new_figure(2.0 + 0.09 * chars, 0.32 * len(lines) + 0.3)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.axis("off")
  step = 1.0 / max(len(lines), 1)
  for row, (i, name) in enumerate(lines):
    y = 1.0 - (row + 0.6) * step
    ax.text(0.005, y, f"#{i} t{target[i]} {name[:12]}", fontsize=7, va="center",
            family="monospace", transform=ax.transAxes)
    words, s = tokens[i], scores[name][i]
    scale = float(np.abs(s[:len(words)]).max()) if words else 0.0
    x = 0.2
    for w, v in zip(words, s):
      ax.text(x, y, w if w.strip() else "·", fontsize=8, va="center",
              family="monospace", transform=ax.transAxes,
              bbox=dict(boxstyle="square,pad=0.1", lw=0, fc=_shade(v, scale)))
      x += 0.78 * max(len(w), 1) / chars
  fig.savefig(path, dpi=90)


def share_bars(path: str, shares: dict[str, float], title: str) -> None:
  """A bar chart of per-modality shares (fractions summing to 1)."""
  fig = figures.new_figure(1.2 + 0.9 * len(shares), 2.4)
  ax = fig.subplots()
  names = list(shares)
  ax.bar(names, [shares[n] for n in names], color="#4c72b0")
  ax.set_ylim(0, 1)
  ax.set_ylabel("share of the attribution")
  ax.set_title(title, fontsize=8)
  for k, n in enumerate(names):
    ax.text(k, shares[n] + 0.02, f"{shares[n]:.0%}", ha="center", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
