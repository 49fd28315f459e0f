"""flash_mla: FlashMLA's MLA decoding op (DeepSeek-V2/V3/R1) in pure Python — Triton and Gluon kernels."""
from .interface import flash_mla_with_kvcache, get_mla_metadata, resolve_backend
from .warmup import warmup

__version__ = "0.1.0"
__all__ = ["flash_mla_with_kvcache", "get_mla_metadata", "resolve_backend", "warmup", "__version__"]
