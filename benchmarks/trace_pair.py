"""Per-pair timeline of the paired kernel (SM clock stamps of CTA (0, 0, 0); diagnostics only).

    python3 benchmarks/trace_pair.py 8192 128 2 0 [NAME=V ...]   (pair_kernel module constants, e.g. RQ_REG=0)
Events (pair_kernel._stamp, v5). Warpgroup 0: 0 pair start, 1 m_a/sc0 published, 2 P0 V0L done, 3 sc1 in and
tiles 0-3 of k0+2 issued, 4 P1 in (P1 V1L next), 5 S tiles 0-3 of k0+2 issued and P1 V1L done, 6 S(k0+2) done.
Warpgroup 1: 8 pair start, 9 sc0 in, 10 m_b/sc1 published and P1 stored, 11 both P V issued, 12 both done (refills
issued), 14 S(k1+2) done. Times in cycles; warpgroup 1's relative to warpgroup 0's pair start.
"""
import sys

import flash_mla.hopper.launcher as hl
import flash_mla.hopper.pair_kernel as P
from trace_ws import traced_run      # (benchmarks/ is on sys.path when this script runs)


def main():
    s_k, h_q, s_q, varlen = (int(x) for x in sys.argv[1:5])
    for kv in sys.argv[5:]:
        name, value = kv.split("=")
        if not hasattr(P, name):
            raise SystemExit(f"pair_kernel has no constant {name}")
        setattr(P, name, int(value))
    hl.CONFIG_OVERRIDE = hl.PAIR
    t = traced_run(P, s_k, h_q, s_q, varlen)
    n = int((t[:, 6] > 0).sum())
    print(f"s_k={s_k} h_q={h_q} s_q={s_q}: {n} pairs traced (CTA 0)")
    print_pairs(t, n, [0, 1, 2, 3, 4, 5, 6], [8, 9, 10, 11, 12, 14],
                "wg0 deltas: pub0 P0V0L sc1 P1in S0-3 S' | wg1 (from wg0 start): start sc0 pub1 PVissued PVdone S'")


def print_pairs(t, n, ev0, ev1, columns):
    """The per-pair table of ``n`` traced pairs (``t``: [pairs, 16] clock stamps, event 0 = warpgroup 0's pair
    start): warpgroup 0's ``ev0`` as deltas between consecutive events, warpgroup 1's ``ev1`` from warpgroup 0's
    start, the period to the next pair; then the median period (also used by ``trace_flashmla.py``)."""
    print(f"pair | {columns} | period")
    per = []
    for i in range(1, min(n, 40)):
        r = t[i]
        b = int(r[0])
        d0 = [int(r[ev0[k + 1]] - r[ev0[k]]) for k in range(len(ev0) - 1)]
        d1 = [int(r[e] - b) for e in ev1]
        period = int(t[i + 1, 0] - r[0]) if i + 1 < n else 0
        if period > 0:
            per.append(period)
        print(f"{i:4d} | {' '.join(f'{x:5d}' for x in d0)} | {' '.join(f'{x:6d}' for x in d1)} | {period}")
    if per:
        med = sorted(per)[len(per) // 2]
        print("median pair period (cycles):", med, "-> per page", med / 2)


if __name__ == "__main__":
    main()
