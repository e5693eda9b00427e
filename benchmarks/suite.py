"""The benchmark table for one device: `python benchmarks/suite.py --help`.

The code lives in mmjax/bench/suite.py (`python -m mmjax.bench.suite` runs the same).
"""
from mmjax.bench.suite import main

if __name__ == "__main__":
  main()
