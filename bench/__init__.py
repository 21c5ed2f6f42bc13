"""Benchmarks: `python -m bench [name ...]` runs bench/bench_<name>.py's `main()`.

They are never collected by pytest (the files are not named test_*); their results go to
docs/benchmarks.md, one section per benchmark.
"""
