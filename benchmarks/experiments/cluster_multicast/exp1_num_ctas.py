"""Exp 1: trivial Gluon kernel compiled with num_ctas=2 for sm_90a: what do layouts / PTX / metadata look like?"""
from common import *

@gluon.jit
def copy_kernel(x_ptr, y_ptr, L: gl.constexpr):
    lay: gl.constexpr = L
    offs = gl.program_id(0) * 256 + gl.arange(0, 256, layout=lay)
    gl.store(y_ptr + offs, gl.load(x_ptr + offs) + 1.0)

@gluon.jit
def pid_kernel(y_ptr):
    lay: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0], cga_layout=[[0]])
    offs = gl.arange(0, 128, layout=lay)
    gl.store(y_ptr + gl.program_id(0) * 128 + offs, gl.full([128], 0, gl.int32, lay) + gl.program_id(0) + 1000 * gl.num_programs(0))

sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "L": "constexpr"}
for nc, L in [(1, gl.BlockedLayout([1], [32], [4], [0])),
              (2, gl.BlockedLayout([1], [32], [4], [0])),
              (2, gl.BlockedLayout([1], [32], [4], [0], cga_layout=[[0]])),
              (2, gl.BlockedLayout([1], [32], [4], [0], cga_layout=[[1]]))]:
    def f():
        k = compile_sm90(copy_kernel, sig, {"L": L}, num_warps=4, num_ctas=nc)
        show(k, r"reqnctapercluster|explicitcluster|maxclusterrank|cluster|ctaid|\.entry|ld\.global|st\.global")
        print("  ttgir module attrs:", [l for l in k.asm["ttgir"].splitlines() if "module attributes" in l][0][:200])
        print("  ttgir layout:", [l for l in k.asm["ttgir"].splitlines() if l.startswith("#blocked")])
    attempt(f"copy num_ctas={nc} layout={L}", f)

def g():
    k = compile_sm90(pid_kernel, {"y_ptr": "*i32"}, {}, num_warps=4, num_ctas=2)
    show(k, r"reqnctapercluster|explicitcluster|cluster|ctaid|nctaid|\.entry")
attempt("program_id / num_programs with num_ctas=2", g)
