"""Run the benchmarks: `python -m bench` runs every bench/bench_*.py, `python -m bench worker`
runs bench_worker.py only. Arguments after `--` go to each chosen benchmark's `main(argv)`.

Every module named bench_<name>.py that has a `main()` is a benchmark; `main` may take the
argument list and may return an exit code.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> dict[str, str]:
    """Benchmark name -> module name, from the files in this package."""
    found = {}
    for info in pkgutil.iter_modules([str(HERE)]):
        if info.name.startswith("bench_"):
            found[info.name.removeprefix("bench_")] = f"bench.{info.name}"
    return dict(sorted(found.items()))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    available = discover()
    unknown = [name for name in names if name not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(available)}")
        return 2
    code = 0
    for name in names or list(available):
        module = importlib.import_module(available[name])
        entry = getattr(module, "main", None)
        if entry is None:
            continue
        print(f"== bench {name} ==", flush=True)
        started = time.monotonic()
        takes_args = bool(inspect.signature(entry).parameters)
        result = entry(extra) if takes_args else entry()
        print(f"== bench {name}: {time.monotonic() - started:.0f} s ==", flush=True)
        code = code or (result if isinstance(result, int) else 0)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
