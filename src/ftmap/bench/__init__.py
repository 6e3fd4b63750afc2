"""ftmap.bench: the comparison matrix of ftmap's maps against dict, dict + Lock, ft_utils and cereggii.

    python -m ftmap.bench [--quick] [--keys 1000,100000] [--threads 1,2] [--out DIR]

Workloads x maps x key counts x thread counts; for each cell the median
throughput of several barrier-started runs, its scaling against one thread,
sampled p50/p99 latency and peak memory. Prints markdown, writes
DIR/results.json, DIR/results.md and, with matplotlib, DIR/throughput.png.
The optional C libraries come with ``pip install 'ftmap[bench]'``; the run
stops if importing one turns the GIL back on.
"""

from ._cli import main, run
from ._contenders import Contender, GilReenabledError, available_contenders
from ._measure import Cell, Settings, measure
from ._report import Report
from ._workloads import WORKLOADS, Workload

__all__ = [
    "WORKLOADS",
    "Cell",
    "Contender",
    "GilReenabledError",
    "Report",
    "Settings",
    "Workload",
    "available_contenders",
    "main",
    "measure",
    "run",
]
