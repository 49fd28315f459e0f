"""``python -m flash_mla.bench`` with Hopper kernel module constants overridden first (device experiments only):

    python3 benchmarks/bench_with.py Q_TMA=1 --baseline benchmarks/anchors/flashmla_h100.json --json out.json

The first argument is what ``hopper_dev.py --cfgs auto:...`` takes after ``auto:`` (``NAME=V,...``; ``ws2.NAME=V``
for one kernel); the rest goes to ``flash_mla.bench``. The override is printed first so the log names it."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hopper_dev import override  # noqa: E402

from flash_mla.bench import main  # noqa: E402

if __name__ == "__main__":
    override(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
