"""Datasets embedded in mmjax: prepared offline from data shipped in installed wheels.

Importing `mmjax.data.embedded.digits` registers the `mmjax_digits` TFDS builder.
"""
