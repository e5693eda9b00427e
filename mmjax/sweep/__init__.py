"""Hyperparameter search over mmjax runs with Optuna (docs/sweeps.md).

  python -m mmjax.sweep --config=PATH[:ARG] --workdir=DIR [--config.x=y ...]
      [--trials=N] [--worker_id=ID] [--report_only]
  python -m mmjax.sweep.lr_range --config=PATH --workdir=DIR [--min_lr= --max_lr= --steps=]

Modules: space (config.sweep's parameters: checks, suggestions, overrides), storage
(journal file or database), pruning (the train-loop hook that reports evals to the
trial), study (one worker: trials, resume, many workers), report (tables and plots),
lr_range (Smith's learning-rate range test). Optuna is imported only inside them, never
by `import mmjax`.
"""
