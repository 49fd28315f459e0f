"""wgmma issued from inline PTX, with its shared-memory descriptors on the uniform datapath (opt-in:
``ws2_kernel.ASM_S``; docs/perf-notes.md "Session 20", ``benchmarks/experiments/asm_wgmma``).

Gluon 3.6 builds each wgmma's descriptors in vector registers and moves them to uniform registers (``R2UR``) before
the instruction. Here one base descriptor comes from the ``global_smem`` symbol and every tile and k-step is a
64-bit constant added to it, so ptxas keeps them in uniform registers (``UIADD3``). The accumulator (an m64n64
fp32 tile: 32 registers per thread) goes through each asm block whole (``pack=32``), outputs tied to inputs, so it
stays in place. The shared-memory offsets are constexprs that the launcher reads from a first build
(``cluster.compile_twice``).

Tiles: 64 x 64 of a 16-bit dtype, 128-byte swizzle (``NVMMASharedLayout`` for [64, 64]), K-major (A = rows of Q,
B = rows of K: ``B^T`` as wgmma reads it).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# high bits of the descriptor: 128-byte swizzle (bits 62-63 = 1), stride byte offset 1024 B (bits 32-45, 16-byte
# units), leading byte offset 0: the constant Triton 3.6 builds for these tiles
DESC_HI = (1 << 62) | ((1024 >> 4) << 32)
_TIED32 = gl.constexpr(",".join(["=f"] * 32 + [str(i) for i in range(32)]))


@gluon.constexpr_function
def _tile_asm(a_off, b_off, first, bf16):
    """PTX: the four m64n64k16 wgmmas of one 64 x 64 tile pair, accumulator $0..$31 (tied to $32..$63); A at
    global_smem + a_off, B at global_smem + b_off; ``first``: the first k-step overwrites the accumulator."""
    t = "bf16" if bf16 else "f16"
    acc = ", ".join(f"${i}" for i in range(32))
    lines = ["{ .reg .b64 d0, da, db; .reg .b32 a; .reg .pred p, q;",
             "mov.u32 a, global_smem;", "cvt.u64.u32 d0, a;", "shr.b64 d0, d0, 4;", f"or.b64 d0, d0, {DESC_HI};",
             f"setp.ne.b32 p, {0 if first else 1}, 0;", "setp.eq.b32 q, 0, 0;", "wgmma.fence.sync.aligned;"]
    for kk in range(4):   # k-steps of 16 elements: +32 bytes inside the swizzled 128-byte rows
        lines.append(f"add.s64 da, d0, {(a_off + 32 * kk) >> 4};")
        lines.append(f"add.s64 db, d0, {(b_off + 32 * kk) >> 4};")
        lines.append(f"wgmma.mma_async.sync.aligned.m64n64k16.f32.{t}.{t} {{{acc}}}, da, db, "
                     f"{'p' if kk == 0 else 'q'}, 1, 1, 0, 0;")
    lines.append("wgmma.commit_group.sync.aligned; }")
    return "\n\t".join(lines)


@gluon.constexpr_function
def _wait_asm(n):
    return f"wgmma.wait_group.sync.aligned {n};"


@gluon.jit
def tile_mma(s, A_OFF: gl.constexpr, B_OFF: gl.constexpr, FIRST: gl.constexpr, BF16: gl.constexpr):
    """``s (+)= A B^T`` over one 64 x 64 tile pair, issued asynchronously (one commit group); ``s``: [64, 64] fp32 in
    the m64n64 wgmma accumulator layout; ``A_OFF`` / ``B_OFF``: byte offsets in the CTA's shared memory."""
    return gl.inline_asm_elementwise(_tile_asm(A_OFF, B_OFF, FIRST, BF16), _TIED32, [s], dtype=gl.float32,
                                     is_pure=False, pack=32)


@gluon.jit
def mma_wait(s, N: gl.constexpr):
    """``wgmma.wait_group N`` with ``s`` (the accumulator of the groups waited for) tied through it."""
    return gl.inline_asm_elementwise(_wait_asm(N), _TIED32, [s], dtype=gl.float32, is_pure=False, pack=32)


# P.V (ASM_PV): B = V, MN-major (the 64-column tiles of a page row are 8 KB apart: leading byte offset 8192, stride
# byte offset 1024, 128-byte swizzle; Triton 3.6 builds the same), A = P from registers
DESC_HI_V = (1 << 62) | ((1024 >> 4) << 32) | ((8192 >> 4) << 16)
_TIED64 = gl.constexpr(",".join(["=f"] * 64 + [str(i) for i in range(64)] + ["r"] * 16 + ["r"] * 32))
_TIED128 = gl.constexpr(",".join(["=f"] * 128 + [str(i) for i in range(128)]))


@gluon.constexpr_function
def _pv_asm(b_off, bf16):
    """PTX: O[:, 0:128] += P V over one page, as four m64n128k16 wgmmas (one commit group). Operands: the
    accumulator $0..$63 (two m64n64 halves, tied to $64..$127), P $128..$143 (the m64n64 accumulator layout in
    16-bit pairs, which is wgmma's A-register layout: k-step kk reads $128+4kk..+3), the ring stage's byte offset
    $144 (a runtime value, the same in every lane); V at global_smem + $144 + b_off."""
    t = "bf16" if bf16 else "f16"
    acc = ", ".join(f"${i}" for i in range(64))
    lines = ["{ .reg .b64 d0, db; .reg .b32 a; .reg .pred q;",
             "mov.u32 a, global_smem;", "add.u32 a, a, $144;", "cvt.u64.u32 d0, a;", "shr.b64 d0, d0, 4;",
             f"or.b64 d0, d0, {DESC_HI_V};", "setp.eq.b32 q, 0, 0;", "wgmma.fence.sync.aligned;"]
    for kk in range(4):   # k-steps of 16 keys: +16 rows of 128 bytes
        a = ", ".join(f"${128 + 4 * kk + i}" for i in range(4))
        lines.append(f"add.s64 db, d0, {(b_off + 2048 * kk) >> 4};")
        lines.append(f"wgmma.mma_async.sync.aligned.m64n128k16.f32.{t}.{t} {{{acc}}}, {{{a}}}, db, q, 1, 1, 1;")
    lines.append("wgmma.commit_group.sync.aligned; }")
    return "\n\t".join(lines)


@gluon.jit
def pv_mma(o0, o1, p, stage_off, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """``[o0 | o1] += p @ V`` issued asynchronously (one commit group): ``o0``, ``o1``: [64, 64] fp32, output columns
    0-63 and 64-127 of one m64n128 accumulator, each in the m64n64 wgmma accumulator layout; ``p``: [64, 64] 16-bit
    in that same layout (the A operand from registers); V: 64 keys x 128 columns at byte ``stage_off + B_OFF`` of
    the CTA's shared memory (``stage_off``: an int32 scalar, ``B_OFF``: a constexpr)."""
    off = gl.full(o0.shape, stage_off, gl.int32, layout=o0.type.layout)
    return gl.inline_asm_elementwise(_pv_asm(B_OFF, BF16), _TIED64, [o0, o1, p, off],
                                     dtype=(gl.float32, gl.float32), is_pure=False, pack=32)


@gluon.jit
def mma_wait4(o0, o1, o2, o3, N: gl.constexpr):
    """``wgmma.wait_group N`` with four m64n64 accumulators tied through it."""
    return gl.inline_asm_elementwise(_wait_asm(N), _TIED128, [o0, o1, o2, o3],
                                     dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=False, pack=32)


_TIED32_RA = gl.constexpr(",".join(["=f"] * 32 + [str(i) for i in range(32)] + ["r"] * 16))


@gluon.constexpr_function
def _tile_ra_asm(b_off, bf16):
    """PTX: the four m64n64k16 wgmmas of one 64 x 64 tile with A from registers ($64..$79: a [64, 64] 16-bit tensor in
    the m64n64 accumulator layout, in pairs; k-step kk reads $64+4kk..+3), B (K-major) at global_smem + b_off,
    accumulating into $0..$31 (tied to $32..$63); one commit group."""
    t = "bf16" if bf16 else "f16"
    acc = ", ".join(f"${i}" for i in range(32))
    lines = ["{ .reg .b64 d0, db; .reg .b32 a; .reg .pred q;",
             "mov.u32 a, global_smem;", "cvt.u64.u32 d0, a;", "shr.b64 d0, d0, 4;", f"or.b64 d0, d0, {DESC_HI};",
             "setp.eq.b32 q, 0, 0;", "wgmma.fence.sync.aligned;"]
    for kk in range(4):
        a = ", ".join(f"${64 + 4 * kk + i}" for i in range(4))
        lines.append(f"add.s64 db, d0, {(b_off + 32 * kk) >> 4};")
        lines.append(f"wgmma.mma_async.sync.aligned.m64n64k16.f32.{t}.{t} {{{acc}}}, {{{a}}}, db, q, 1, 1, 0;")
    lines.append("wgmma.commit_group.sync.aligned; }")
    return "\n\t".join(lines)


@gluon.jit
def tile_mma_ra(s, a, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """``s += a B^T`` over one 64 x 64 tile, issued asynchronously (one commit group); ``s``: [64, 64] fp32 in the m64n64
    wgmma accumulator layout; ``a``: [64, 64] 16-bit in that same layout (wgmma's A-register layout); B at byte
    ``B_OFF`` of the CTA's shared memory (K-major, 128-byte swizzle)."""
    return gl.inline_asm_elementwise(_tile_ra_asm(B_OFF, BF16), _TIED32_RA, [s, a], dtype=gl.float32,
                                     is_pure=False, pack=32)


# O (64 x 256 of one warpgroup) += P V as m64n256k16 wgmmas, O held as four m64n64 quarters (pair_kernel.ASM_PV)
_TIED128_RA = gl.constexpr(",".join(["=f"] * 128 + [str(i) for i in range(128)] + ["r"] * 16))
_TIED128_SS = gl.constexpr(",".join(["=f"] * 128 + [str(i) for i in range(128)]))


@gluon.constexpr_function
def _pv256_asm(a_off, b_off, bf16):
    """PTX: O[:, 0:256] += P V over one page (four m64n256k16 wgmmas, one commit group). O: $0..$127 (four m64n64
    quarters, tied to $128..$255). ``a_off`` None: P from registers ($256..$271, the m64n64 accumulator layout in
    16-bit pairs); else P at global_smem + a_off (K-major, 128-byte swizzle). V (MN-major) at global_smem + b_off."""
    t = "bf16" if bf16 else "f16"
    acc = ", ".join(f"${i}" for i in range(128))
    lines = ["{ .reg .b64 d0, da, db; .reg .b32 a; .reg .pred q;",
             "mov.u32 a, global_smem;", "cvt.u64.u32 d0, a;", "shr.b64 d0, d0, 4;", "setp.eq.b32 q, 0, 0;",
             "wgmma.fence.sync.aligned;"]
    for kk in range(4):   # k-steps of 16 keys
        lines.append(f"add.s64 db, d0, {DESC_HI_V + ((b_off + 2048 * kk) >> 4)};")
        if a_off is None:
            a = ", ".join(f"${256 + 4 * kk + i}" for i in range(4))
            lines.append(f"wgmma.mma_async.sync.aligned.m64n256k16.f32.{t}.{t} {{{acc}}}, {{{a}}}, db, q, 1, 1, 1;")
        else:
            lines.append(f"add.s64 da, d0, {DESC_HI + ((a_off + 32 * kk) >> 4)};")
            lines.append(f"wgmma.mma_async.sync.aligned.m64n256k16.f32.{t}.{t} {{{acc}}}, da, db, q, 1, 1, 0, 1;")
    lines.append("wgmma.commit_group.sync.aligned; }")
    return "\n\t".join(lines)


@gluon.jit
def pv256_ra(o, p, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """``o += p @ V`` issued asynchronously (one commit group); ``o``: a tuple of four [64, 64] fp32 quarters (output
    columns 0-63 .. 192-255) in the m64n64 wgmma accumulator layout; ``p``: [64, 64] 16-bit in that layout (the A
    operand from registers); V: 64 keys x 256 columns (four 64-column tiles, 8 KB apart) at byte ``B_OFF``."""
    return gl.inline_asm_elementwise(_pv256_asm(None, B_OFF, BF16), _TIED128_RA, [o[0], o[1], o[2], o[3], p],
                                     dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=False, pack=32)


@gluon.jit
def pv256_ss(o, A_OFF: gl.constexpr, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """As ``pv256_ra`` with P (64 x 64, K-major) in shared memory at byte ``A_OFF``."""
    return gl.inline_asm_elementwise(_pv256_asm(A_OFF, B_OFF, BF16), _TIED128_SS, [o[0], o[1], o[2], o[3]],
                                     dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=False, pack=32)
