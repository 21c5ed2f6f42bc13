"""Benchmarks: `python -m bench [name ...]` runs bench/bench_<name>.py's `main()`.

They are never collected by pytest (the files are not named test_*); their results go to
docs/benchmarks.md, one section per benchmark.
"""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path


def machine() -> str:
    """The machine, for the figures' heading: results only compare within one run."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}"
    )
