"""Hopper (sm_90a) fast path: a Gluon kernel for MLA decoding (d=576, dv=512, page 64, h_kv=1, bf16/fp16).

``mla_decode_hopper`` writes whole-sequence chunks to ``out``/``lse`` and split chunks to the fp32 workspace
(``o_accum``/``lse_accum``, ``[b + num_sm_parts, s_q*h_q, ...]``) for the combine kernel; ``supports`` says
whether the inputs qualify. Raises ImportError where Gluon is unavailable (the interface then falls back).
"""
from .launcher import mla_decode_hopper, supports, tma_aligned

__all__ = ["mla_decode_hopper", "supports", "tma_aligned"]
