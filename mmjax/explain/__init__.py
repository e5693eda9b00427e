"""Attributions: which input features a model's decision rests on (mmjax.explain.methods)
and whether the maps are faithful (mmjax.explain.faithfulness)."""
