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
"""
from __future__ import annotations

import functools
import os

import torch
from triton import knobs
from triton.runtime import driver


class CachedKernel:
    def __init__(self, fn):
        self.fn = fn
        self.compiled: dict = {}

    def __call__(self, key, grid, *args, **kwargs):
        """Launch ``fn`` on ``grid`` with every parameter (constexprs included; positional ones first, the rest
        by name) and launch options (``num_warps`` ...) on the current stream of the current device. ``key``
        as described in the module docstring."""
        kernel = self.compiled.get(key)
        if kernel is None:
            kernel = self.fn[grid](*args, **kwargs)
            if kernel is not None and len(self.compiled) < 1024:   # None under the interpreter
                self.compiled[key] = kernel
            return
        if kwargs:
            args = args + tuple(kwargs[name] for name in self.fn.arg_names[len(args):])
        # Triton's own stream query (torch.cuda.current_stream() costs ~5-10 us of host time per call)
        stream = driver.active.get_current_stream(driver.active.get_current_device())
        kernel.run(grid[0], grid[1], grid[2], stream, kernel.function, kernel.packed_metadata,
                   kernel.launch_metadata(grid, stream, *args),
                   knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *args)


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
