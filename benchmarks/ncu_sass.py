"""Per-instruction warp-stall samples from an Nsight Compute source export (diagnostics).

    ncu --section SourceCounters --section WarpStateStats --import-source yes -k regex:mla_decode_ws -s 3 -c 1 \
        -o x python3 benchmarks/ncu_one.py 8192 128 2 0 ws2
    ncu --import x.ncu-rep --page source --csv --print-source sass | gzip > sass.csv.gz
    python3 benchmarks/ncu_sass.py sass.csv.gz                 # partitions (setmaxnreg regions) and their samples
    python3 benchmarks/ncu_sass.py sass.csv.gz 1885 2218       # instructions [lo, hi) with their top stall reasons
    python3 benchmarks/ncu_sass.py --wavefronts a.csv.gz [b.csv.gz]   # shared-memory wavefronts per opcode
"""
import csv
import gzip
import sys
from collections import Counter


def load(path):
    """[{src, samples, exec, st: {reason: samples}}] in SASS order."""
    opener = gzip.open if path.endswith(".gz") else open
    rows = list(csv.reader(opener(path, "rt")))
    hdr = rows[1]
    col = {h: i for i, h in enumerate(hdr)}
    out = []
    for r in rows[2:]:
        if len(r) < len(hdr):
            continue
        out.append({
            "src": r[col["Source"]].strip(),
            "samples": int(r[col["Warp Stall Sampling (All Samples)"]] or 0),
            "exec": int(r[col["Instructions Executed"]] or 0),
            "st": {h[6:]: int(r[i] or 0) for h, i in col.items() if h.startswith("stall_") and "Not Issued" not in h},
            "wavefronts": int(r[col["L1 Wavefronts Shared"]] or 0) if "L1 Wavefronts Shared" in col else 0,
        })
    return out


def _opcode(src: str) -> str:
    """``HGMMA.64x64x16.F32.BF16`` kept whole (the shape is the point); other opcodes without modifiers."""
    toks = src.split()
    op = toks[1] if toks and toks[0].startswith("@") and len(toks) > 1 else (toks[0] if toks else "")
    return op if op.startswith("HGMMA") else op.split(".")[0]


def wavefronts(paths):
    """Shared-memory wavefronts (L1) and executed instructions per opcode, one column per export."""
    per = []
    for p in paths:
        w, n = Counter(), Counter()
        for d in load(p):
            w[_opcode(d["src"])] += d["wavefronts"]
            n[_opcode(d["src"])] += d["exec"]
        per.append((w, n))
    ops = sorted({op for w, _ in per for op in w if w[op]}, key=lambda op: -max(w[op] for w, _ in per))
    print(f"{'opcode':26s}" + "".join(f"{'wavefronts':>14s} {'instructions':>13s}" for _ in per))
    for op in ops:
        print(f"{op:26s}" + "".join(f"{w[op]:14,d} {n[op]:13,d}" for w, n in per))
    print(f"{'total':26s}" + "".join(f"{sum(w.values()):14,d} {sum(n.values()):13,d}" for w, n in per))


def main():
    if sys.argv[1] == "--wavefronts":
        wavefronts(sys.argv[2:])
        return
    ins = load(sys.argv[1])
    if len(sys.argv) == 2:
        cuts = [i for i, d in enumerate(ins) if "SETMAXREG" in d["src"]] + [len(ins)]
        lo = 0
        for hi in cuts:
            if hi > lo:
                c = Counter()
                for d in ins[lo:hi]:
                    c.update(d["st"])
                print(f"[{lo:5d}, {hi:5d}) samples {sum(d['samples'] for d in ins[lo:hi]):7d}  {c.most_common(4)}")
            lo = hi
        return
    lo, hi = int(sys.argv[2]), int(sys.argv[3])
    for i in range(lo, hi):
        d = ins[i]
        top = " ".join(f"{k}:{v}" for k, v in sorted(d["st"].items(), key=lambda kv: -kv[1])[:3] if v)
        print(f"{i:5d} {d['samples']:6d} {d['exec']:8d}  {d['src'][:60]:60s} {top}")


if __name__ == "__main__":
    main()
