"""Differentially private training: per-example clipped and noised gradients
(`gradients`), Poisson batches that match the accountant (`sampling`), ε from Google's
dp-accounting (`accounting`), the checks before compute (`checks`), the run's privacy
ledger and budget (`hook`) and an empirical canary audit (`audit`). docs/privacy.md.

Nothing here is imported unless `privacy.enabled`: dp-accounting and jax-privacy are the
optional `privacy` extra.
"""
