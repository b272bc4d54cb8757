"""The benchmark suite (`make bench`, `python -m bench.suite`) and the per-stage benchmarks."""
