"""int8 quantization of mmjax models with Google's qwix (the optional `quant` extra):
post-training quantization (`ptq`: weight-only, dynamic-range, static-range with a
calibration pass), quantization-aware training (`qat`: fake quant with straight-through
gradients, `config.quantization.qat`), QLoRA-style LoRA on a frozen int8 base (`qlora`),
and which layers each method quantizes or refuses (`layers`). docs/efficiency.md.

Nothing here is imported unless quantization is asked for; qwix is imported lazily.
"""
