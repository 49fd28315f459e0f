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


def main():
    cfgs = sys.argv[1:] or ["8192,16,1,0", "8192,64,1,0", "8192,32,2,0", "8192,128,2,0"]
    for c in cfgs:
        s_k, h_q, s_q, varlen = (int(x) for x in c.split(","))
        fn, _, _ = decode_call(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, "cuda")
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
                                "-lms", "100"], stdout=subprocess.PIPE, text=True)
        t0 = time.time()
        n = 0
        while time.time() - t0 < 3.0:
            for _ in range(50):
                fn()
            n += 50
            torch.cuda.synchronize()
        dt = time.time() - t0
        smi.terminate()
        rows = [r.split(",") for r in smi.communicate()[0].strip().splitlines() if "," in r]
        clk = sorted(float(a) for a, _ in rows)
        pw = sorted(float(b) for _, b in rows)
        print(f"s_k={s_k} h_q={h_q} s_q={s_q} varlen={varlen}: {dt / n * 1e3:.4f} ms/call (loop), "
              f"SM clock median {clk[len(clk) // 2]:.0f} MHz (min {clk[0]:.0f}), power median {pw[len(pw) // 2]:.0f} W "
              f"({len(rows)} samples)", flush=True)


if __name__ == "__main__":
    main()
