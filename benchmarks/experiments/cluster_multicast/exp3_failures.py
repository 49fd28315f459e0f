"""Exp 3: what does NOT work: passing a shared_memory_descriptor or a tensor descriptor to gl.inline_asm_elementwise,
and the TMA builtin with a multicast keyword."""
from common import *
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier

L1 = gl.BlockedLayout([1], [32], [4], [0])
SL = gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16)

@gluon.jit
def smem_arg_kernel(desc, y_ptr):
    smem = gl.allocate_shared_memory(gl.bfloat16, [64, 64], desc.layout)
    a = gl.inline_asm_elementwise("mov.u32 $0, $1;", "=r,r", [smem], dtype=gl.int32, is_pure=False, pack=1)
    gl.store(y_ptr + gl.arange(0, 128, layout=gl.BlockedLayout([1], [32], [4], [0])), a)

@gluon.jit
def desc_arg_kernel(desc, y_ptr):
    a = gl.inline_asm_elementwise("mov.u64 $0, $1;", "=l,l", [desc], dtype=gl.int64, is_pure=False, pack=1)
    gl.store(y_ptr + gl.arange(0, 128, layout=gl.BlockedLayout([1], [32], [4], [0])), a)

@gluon.jit
def mc_kw_kernel(desc, y_ptr):
    smem = gl.allocate_shared_memory(gl.bfloat16, [64, 64], desc.layout)
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    tma.async_copy_global_to_shared(desc, [0, 0], bar, smem, multicast=True)

sig = {"desc": f"tensordesc<bf16[64, 64],{SL!r}>", "y_ptr": "*i32"}
attempt("memdesc as inline_asm arg", lambda: compile_sm90(smem_arg_kernel, sig, {}, num_warps=4))
attempt("tensordesc as inline_asm arg", lambda: compile_sm90(desc_arg_kernel, dict(sig, y_ptr="*i64"), {}, num_warps=4))
attempt("tma.async_copy_global_to_shared(..., multicast=True)", lambda: compile_sm90(mc_kw_kernel, sig, {}, num_warps=4))
