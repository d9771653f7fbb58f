"""Benchmarks (not collected by pytest). Run each from the repository root as a module, for
example `python -m bench.rnn`, so `import mytorch` finds this checkout; see bench/README.md."""
