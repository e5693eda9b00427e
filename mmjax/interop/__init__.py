"""Import and export of pretrained checkpoints in Hugging Face format (config.json +
safetensors on disk; no hub access): BERT and its family (MiniLM), GPT-2, ViT.

  model, params = mmjax.interop.load_pretrained(path)          # -> mmjax model + params
  out = model.apply({'params': params}, {'text': ids, 'text_mask': mask})
  out['hidden']                                                 # [batch, tokens, width]
  mmjax.interop.save_pretrained(dir, model_config, params)     # back to safetensors
  mmjax.interop.save_peft_adapter(dir, model_config, params)   # unmerged LoRA, PEFT format

See docs/finetuning.md.
"""
from mmjax.interop.peft_adapters import read_peft_adapter, save_peft_adapter
from mmjax.interop.pretrained import (TOKENIZER_FILES, import_into, load_pretrained,
                                      log_import_report, model_config_from_pretrained,
                                      read_config, read_tensors, save_pretrained)

__all__ = ["TOKENIZER_FILES", "import_into", "load_pretrained", "log_import_report",
           "model_config_from_pretrained", "read_config", "read_tensors", "save_pretrained",
           "read_peft_adapter", "save_peft_adapter"]
