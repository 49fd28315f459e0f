"""The lazy running max's rescales (the paired kernel's LAZY): each warp skips its multiplies when every row scale
of its 16 rows is exactly 1, decided by a warp vote on the scales themselves (inline PTX: a ``vote.sync.any`` and a
branch around the multiplies; ptxas keeps the accumulator in place)."""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

_VOTE_ASM = gl.constexpr("{ .reg .pred p; setp.neu.f32 p, $2, 0f3F800000; setp.neu.or.f32 p, $3, 0f3F800000, p; "
                         "vote.sync.any.pred p, p, -1; selp.s32 $0, 1, 0, p; selp.s32 $1, 1, 0, p; }")
LAZY_PACK = gl.constexpr(16)   # accumulator elements per rescale asm block (one vote test and branch each)


@gluon.constexpr_function
def _lazy_mul_asm(k):
    """PTX: $0..$k-1 (tied to $k..$2k-1, the accumulator elements) *= $2k..$3k-1 (their rows' scales), skipped when
    $3k (the warp's flag) is 0."""
    lines = [f"{{ .reg .pred p; setp.eq.s32 p, ${3 * k}, 0; @p bra.uni lazySkip;"]
    lines += [f"mul.f32 ${i}, ${k + i}, ${2 * k + i};" for i in range(k)]
    lines.append("lazySkip: }")
    return "\n\t".join(lines)


@gluon.constexpr_function
def _lazy_mul_constraints(k):
    return ",".join(["=f"] * k + [str(i) for i in range(k)] + ["f"] * k + ["r"] * k)


@gluon.jit
def _warp_flag(sc):
    """1 in every element of a warp's rows when any of its 16 rows has ``sc != 1`` (``vote.sync.any``), else 0.
    ``sc``: a [64] row vector of the S / O accumulator layouts (two rows per thread)."""
    return gl.inline_asm_elementwise(_VOTE_ASM, "=r,=r,f,f", [sc], dtype=gl.int32, is_pure=True, pack=2)


@gluon.jit
def _lazy_scale(acc, sc, LAZY: gl.constexpr):
    """``acc * sc[:, None]`` (``sc`` in the row layout of ``acc``). LAZY: each warp skips the multiplies when every
    scale of its rows is exactly 1 (a branch around them; ptxas keeps the accumulator in place)."""
    if LAZY:
        flag = _warp_flag(sc)
        out = gl.inline_asm_elementwise(_lazy_mul_asm(LAZY_PACK), _lazy_mul_constraints(LAZY_PACK),
                                        [acc, sc[:, None], flag[:, None]], dtype=gl.float32, is_pure=True,
                                        pack=LAZY_PACK)
    else:
        out = acc * sc[:, None]
    return out


@gluon.constexpr_function
def _lazy_mul16_asm(k, bf16):
    """PTX over k 16-bit elements of P, two per 32-bit register (Triton packs them, element 2j in the low half of
    register j): outputs $0..$k/2-1 (tied to inputs $k/2..$k-1) get element i rounded from float(element i) times its
    row's scale (input k + i), skipped when input 2k (the warp's flag) is 0."""
    t = "bf16" if bf16 else "f16"
    h = k // 2
    lines = [f"{{ .reg .pred p; .reg .b16 a, b; .reg .f32 x, y; setp.eq.s32 p, ${k + k}, 0; @p bra.uni lazySkip16;"]
    for j in range(h):
        lines.append(f"mov.b32 {{a, b}}, ${h + j}; cvt.f32.{t} x, a; mul.f32 x, x, ${k + 2 * j}; "
                     f"cvt.f32.{t} y, b; mul.f32 y, y, ${k + 2 * j + 1}; cvt.rn.{t}x2.f32 ${j}, y, x;")
    lines.append("lazySkip16: }")
    return "\n\t".join(lines)


@gluon.constexpr_function
def _lazy_mul16_constraints(k):
    h = k // 2
    return ",".join(["=r"] * h + [str(i) for i in range(h)] + ["f"] * k + ["r"] * k)


@gluon.jit
def _lazy_scale_p(pb, sc, LAZY: gl.constexpr):
    """``(pb * sc[:, None])`` rounded to pb's 16-bit dtype (``sc`` in the row layout of ``pb``); LAZY: skipped by each
    warp whose rows all have ``sc == 1`` (``pb`` unchanged: exact, as the product would be)."""
    if LAZY:
        flag = _warp_flag(sc)
        out = gl.inline_asm_elementwise(_lazy_mul16_asm(LAZY_PACK, pb.dtype == gl.bfloat16),
                                        _lazy_mul16_constraints(LAZY_PACK), [pb, sc[:, None], flag[:, None]],
                                        dtype=pb.dtype, is_pure=True, pack=LAZY_PACK)
    else:
        out = (pb.to(gl.float32) * sc[:, None]).to(pb.dtype)
    return out
