"""SM clock and board power while one benchmark config runs back to back (diagnostics).

    python3 benchmarks/clock_probe.py [s_k,h_q,s_q,varlen ...]
For each config: decode calls in a loop for ~3 s while ``nvidia-smi`` samples clocks.sm and power.draw every
100 ms; prints the medians and the time per call. Used to tell whether a memory-bound shape is slowed by power
(a lower SM clock with more valid query rows) rather than by the kernel's schedule.
"""
import subprocess
import sys
import time

import torch

from flash_mla.bench import Config, decode_call


def sample_while_running(fn, fields: str, seconds: float, interval_ms: int, batch: int, settle: float = 0.0):
    """Calls ``fn`` back to back (``batch`` calls, then a sync) for ``seconds`` while ``nvidia-smi`` samples the
    comma-separated ``fields`` every ``interval_ms``. Returns (ms per call, [[float per field] per sample]).
    ``settle``: seconds between starting nvidia-smi and the first timed call."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits",
                            "-lms", str(interval_ms)], stdout=subprocess.PIPE, text=True)
    time.sleep(settle)
    t0, n = time.time(), 0
    while time.time() - t0 < seconds:
        for _ in range(batch):
            fn()
        n += batch
        torch.cuda.synchronize()
    dt = time.time() - t0
    smi.terminate()
    width = fields.count(",")
    rows = [[float(x) for x in r.split(",")] for r in smi.communicate()[0].strip().splitlines()
            if r.count(",") == width]
    return dt / n * 1e3, rows


def main():
    cfgs = sys.argv[1:] or ["8192,16,1,0", "8192,64,1,0", "8192,32,2,0", "8192,128,2,0"]
    for c in cfgs:
        s_k, h_q, s_q, varlen = (int(x) for x in c.split(","))
        fn, _, _ = decode_call(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, "cuda")
        ms, rows = sample_while_running(fn, "clocks.sm,power.draw", seconds=3.0, interval_ms=100, batch=50)
        clk = sorted(a for a, _ in rows)
        pw = sorted(b for _, b in rows)
        print(f"s_k={s_k} h_q={h_q} s_q={s_q} varlen={varlen}: {ms:.4f} ms/call (loop), "
              f"SM clock median {clk[len(clk) // 2]:.0f} MHz (min {clk[0]:.0f}), power median {pw[len(pw) // 2]:.0f} W "
              f"({len(rows)} samples)", flush=True)


if __name__ == "__main__":
    main()
