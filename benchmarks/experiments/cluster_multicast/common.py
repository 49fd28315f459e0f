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

def smem_offsets(k, capability=90):
    """Run the allocation passes of make_llir on the kernel's TTGIR and return [(offset, alloc line)] of every
    ttg.local_alloc (the allocation.offset attribute the LLVM lowering will use)."""
    import os, tempfile
    from triton._C.libtriton import ir, passes, nvidia
    from triton.backends.nvidia.compiler import CUDABackend, get_ptx_version_from_options
    backend = CUDABackend(GPUTarget("cuda", capability, 32))
    ctx = ir.context(); ir.load_dialects(ctx); backend.load_dialects(ctx)
    with tempfile.NamedTemporaryFile("w", suffix=".ttgir", delete=False) as f:
        f.write(k.asm["ttgir"]); path = f.name
    mod = ir.parse_mlir_module(path, ctx); os.unlink(path)
    pm = ir.pass_manager(ctx)
    passes.ttgpuir.add_combine_tensor_select_and_if(pm)
    passes.ttgpuir.add_allocate_warp_groups(pm)
    passes.convert.add_scf_to_cf(pm)
    passes.gluon.add_inliner(pm)
    opts = backend.parse_options({})
    nvidia.passes.ttgpuir.add_allocate_shared_memory_nv(pm, capability, get_ptx_version_from_options(opts, capability))
    pm.run(mod, "alloc")
    out = []
    for l in str(mod).splitlines():
        m = re.search(r"(%\S+) = ttg.local_alloc \{allocation.offset = (\d+) : i32\}.*-> (!ttg.memdesc<[^>]*>)", l)
        if m:
            out.append((int(m.group(2)), m.group(1), m.group(3)))
    return out
