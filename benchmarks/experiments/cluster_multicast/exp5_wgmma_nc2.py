"""Exp 5: can warpgroup_mma be used in a num_ctas=2 Gluon kernel? (usage: python exp5_wgmma_nc2.py {bcast|split})
bcast: every CTA holds the whole 64x64 tile (cga [[0,0]]): the replicated-per-CTA model.
split: the logical tile is 128 x 64, rows split over the 2 CTAs (cga [[1,0]]), B broadcast."""
import sys
from common import *
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma, fence_async_shared

@gluon.jit
def mma_kernel(a_ptr, b_ptr, c_ptr, M: gl.constexpr, ASL: gl.constexpr, BSL: gl.constexpr, RLA: gl.constexpr,
               RLB: gl.constexpr, ACC: gl.constexpr):
    ra = gl.arange(0, M, layout=gl.SliceLayout(1, RLA)); ca = gl.arange(0, 64, layout=gl.SliceLayout(0, RLA))
    rb = gl.arange(0, 64, layout=gl.SliceLayout(1, RLB)); cb = gl.arange(0, 64, layout=gl.SliceLayout(0, RLB))
    a = gl.allocate_shared_memory(gl.bfloat16, [M, 64], ASL, gl.load(a_ptr + ra[:, None] * 64 + ca[None, :]))
    b = gl.allocate_shared_memory(gl.bfloat16, [64, 64], BSL, gl.load(b_ptr + rb[:, None] * 64 + cb[None, :]))
    fence_async_shared()
    acc = warpgroup_mma(a, b, gl.zeros([M, 64], gl.float32, ACC))
    rc = gl.arange(0, M, layout=gl.SliceLayout(1, ACC)); cc = gl.arange(0, 64, layout=gl.SliceLayout(0, ACC))
    gl.store(c_ptr + rc[:, None] * 64 + cc[None, :], acc)

mode = sys.argv[1]
ca = [[0, 0]] if mode == "bcast" else [[1, 0]]
M = 64 if mode == "bcast" else 128
consts = dict(M=M, ASL=gl.NVMMASharedLayout.get_default_for([M, 64], gl.bfloat16, cga_layout=ca),
              BSL=gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16, cga_layout=[[0, 0]]),
              RLA=gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0], cga_layout=ca),
              RLB=gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0], cga_layout=[[0, 0]]),
              ACC=gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16], cga_layout=ca))
sig = {"a_ptr": "*bf16", "b_ptr": "*bf16", "c_ptr": "*fp32", **{k: "constexpr" for k in consts}}
def f():
    k = compile_sm90(mma_kernel, sig, consts, num_warps=4, num_ctas=2)
    show(k, r"reqnctapercluster|wgmma.mma_async|cluster_ctarank|@%p\d+ st.global", maxl=8)
attempt(f"wgmma num_ctas=2 {mode}", f)
