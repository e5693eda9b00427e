"""The PyTorch reference step on its own: `python benchmarks/torch_gpt.py --help`.

It lives in mmjax/bench/torch_gpt.py so that `--mode=bench` can start it side by side
with mmjax's step (`bench.compare=("torch_eager", "torch_compile")`); this file keeps
the old command working.
"""
from mmjax.bench.torch_gpt import main

if __name__ == "__main__":
  main()
