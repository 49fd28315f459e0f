"""Low-overhead kernel launches for the decode loop.

``kernel[grid](...)`` makes Triton re-derive the specialization of every argument (alignment, ``== 1``,
divisibility by 16) and look the compiled kernel up on each call: ~25–40 us of host time per launch on the
machines we measured, more than a short decode kernel runs. In a decode loop the specialization is fixed by
the argument *shapes*, *strides* and pointer alignments, which the caller can summarise in a small key. A
``CachedKernel`` launches through Triton the first time a key is seen (compiling if needed) and keeps the
compiled kernel; later calls with the same key go straight to the compiled kernel's launcher.

The key must determine everything Triton specialises on: every int argument's value class (callers put the
shapes/strides the ints derive from in the key), every pointer's 16-byte alignment, the constexprs and the
launch options, and the device.

TMA descriptors: Triton 3.6's launcher encodes every ``TensorDescriptor`` argument into a ``CUtensorMap``
(``cuTensorMapEncodeTiled``) on every launch. An encoded map depends only on the base address, shape, strides,
box and swizzle, so ``CachedKernel`` keeps the encodings of recent geometries (``DescriptorCache``) and
hands them to the compiled kernel's raw launcher: same arguments, no re-encoding per decode step.
"""
from __future__ import annotations

import collections
import functools
import os

import torch
from triton import knobs
from triton.runtime import driver


FAST_DESCRIPTORS = True   # False: every launch through Triton's own launcher wrapper (A/B timing, fallback)


class DescriptorCache:
    """Encoded TMA descriptor arguments by geometry: ``get(desc, meta_key, meta)`` returns what Triton's launcher
    passes for a ``TensorDescriptor`` (``[CUtensorMap, *shape, *strides]``), encoding it with ``encode`` (Triton's
    ``make_tensordesc_arg(desc, meta)``) only for a geometry not seen recently. ``meta_key`` is the hashable
    content of ``meta`` (swizzle, element type, box). Least-recently-used entries go first once ``size`` is
    reached: sized for a model's layers (each with its own cache tensor) times kernels. Holds no tensor
    references."""

    def __init__(self, encode, size: int = 1024):
        self.encode = encode
        self.size = size
        self.entries: collections.OrderedDict = collections.OrderedDict()

    def get(self, desc, meta_key, meta):
        key = (desc.base.data_ptr(), tuple(desc.shape), tuple(desc.strides), tuple(desc.block_shape),
               desc.padding, meta_key)
        hit = self.entries.get(key)
        if hit is None:
            if len(self.entries) >= self.size:
                self.entries.popitem(last=False)
            hit = self.entries[key] = self.encode(desc, meta)
        else:
            self.entries.move_to_end(key)
        return hit


def expand_descriptors(args, positions, metas, meta_keys, cache: DescriptorCache) -> list:
    """``args`` with the tensor descriptor at each of ``positions`` replaced by its encoded arguments (as Triton's
    launcher wrapper does, through ``cache``)."""
    final = list(args)
    for pos, meta, key in zip(reversed(positions), reversed(metas), reversed(meta_keys)):
        final[pos:pos + 1] = cache.get(final[pos], key, meta)
    return final


def _frozen(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_frozen(v) for v in x)
    return x


def _desc_launcher(run):
    """(raw launcher, tensor-descriptor argument positions, their metadata, its hashable content) of a compiled
    kernel's ``CudaLauncher`` when it is Triton 3.6's shape (a tensor-descriptor wrapper around the raw launcher,
    base arguments ``iiiKKppOOOOOO``); None otherwise, and the launch goes through Triton's own path."""
    try:
        from triton.backends.nvidia import driver as nv
    except ImportError:
        return None
    if getattr(nv, "_BASE_ARGS_FORMAT", None) != "iiiKKppOOOOOO":
        return None
    inner = getattr(run, "launch", None)
    code = getattr(inner, "__code__", None)
    if code is None or not inner.__closure__:
        return None
    cells = dict(zip(code.co_freevars, (c.cell_contents for c in inner.__closure__)))
    if not {"launcher", "tensordesc_indices", "tensordesc_meta"} <= cells.keys():
        return None
    metas = cells["tensordesc_meta"]
    if not metas or any(m is None for m in metas):
        return None
    return cells["launcher"], sorted(cells["tensordesc_indices"]), list(metas), [_frozen(m) for m in metas]


class CachedKernel:
    def __init__(self, fn):
        self.fn = fn
        self.compiled: dict = {}
        self.fast: dict = {}    # key -> _desc_launcher(...) for kernels taking TMA descriptors
        self.descs = None

    def install(self, key, kernel) -> None:
        """Launch the already compiled ``kernel`` for ``key`` from now on (for kernels compiled with ``warmup``
        and adjusted before their first launch, e.g. ws2's 2-CTA cluster variant)."""
        self.compiled[key] = kernel
        self.fast[key] = _desc_launcher(kernel.run)

    def __call__(self, key, grid, *args, **kwargs):
        """Launch ``fn`` on ``grid`` with every parameter (constexprs included; positional ones first, the rest
        by name) and launch options (``num_warps`` ...) on the current stream of the current device. ``key``
        as described in the module docstring."""
        kernel = self.compiled.get(key)
        if kernel is None:
            kernel = self.fn[grid](*args, **kwargs)
            if kernel is not None and len(self.compiled) < 1024:   # None under the interpreter
                self.compiled[key] = kernel
                self.fast[key] = _desc_launcher(kernel.run)
            return
        if kwargs:
            args = args + tuple(kwargs[name] for name in self.fn.arg_names[len(args):])
        # Triton's own stream query (torch.cuda.current_stream() costs ~5-10 us of host time per call)
        stream = driver.active.get_current_stream(driver.active.get_current_device())
        fast = self.fast.get(key)
        run = kernel.run
        if fast is None or not FAST_DESCRIPTORS or run.global_scratch_size or run.profile_scratch_size:
            run(grid[0], grid[1], grid[2], stream, kernel.function, kernel.packed_metadata,
                kernel.launch_metadata(grid, stream, *args),
                knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *args)
            return
        # what CudaLauncher.__call__ and its tensor-descriptor wrapper do, with the descriptors from the cache
        raw, positions, metas, meta_keys = fast
        if self.descs is None:
            from triton.backends.nvidia.driver import make_tensordesc_arg
            self.descs = DescriptorCache(make_tensordesc_arg)
        final = expand_descriptors(args, positions, metas, meta_keys, self.descs)
        raw(grid[0], grid[1], grid[2], stream, kernel.function, run.launch_cooperative_grid, run.launch_pdl,
            None, None, kernel.packed_metadata, kernel.launch_metadata(grid, stream, *args),
            knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *final)


def alignment_key(*tensors) -> tuple:
    """The 16-byte alignment of each tensor's data pointer (part of Triton's specialization)."""
    return tuple(t.data_ptr() % 16 == 0 for t in tensors)


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def device_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability of a CUDA device (cached: no driver call per launch)."""
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch: sm_90+ only, and not under Triton's interpreter."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    return device_capability(device)[0] >= 9
