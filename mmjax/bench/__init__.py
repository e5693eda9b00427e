"""Benchmarks, FLOP counts and AOT plans (no TensorFlow needed)."""
