import re, sys, traceback
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource

def compile_sm90(kernel, sig, consts, **opts):
    src = GluonASTSource(kernel, sig, consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)

def show(k, pats, asm=("ptx",), maxl=40):
    print("metadata: num_ctas=%s cluster_dims=%s shared=%s" % (k.metadata.num_ctas, getattr(k.metadata, 'cluster_dims', None), k.metadata.shared))
    for a in asm:
        n = 0
        for l in k.asm[a].splitlines():
            if re.search(pats, l):
                print(f"  [{a}] {l.strip()}"); n += 1
                if n >= maxl: break

def attempt(name, fn):
    print(f"===== {name}")
    try:
        fn()
    except Exception as e:
        msg = str(e)
        print("FAILED:", type(e).__name__, msg[-1500:])


# the allocation offsets reader, shared with the MC launcher: [(offset, memdesc type)] in program order
from flash_mla.hopper.cluster import smem_offsets  # noqa: E402,F401
