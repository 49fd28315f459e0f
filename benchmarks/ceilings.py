"""The device's two ceilings, measured the way the anchors' run did: a large device-to-device copy (bytes read +
written) and an 8192^3 bf16 matmul on random data (medians of triton.testing.do_bench).

    python3 benchmarks/ceilings.py
"""
import torch
import triton

if __name__ == "__main__":
    dev = torch.cuda.get_device_name()
    n = 2 * 1024**3 // 2                   # 2 GiB of bf16 per buffer
    src = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    copy_gbs = 2 * src.numel() * 2 / ms / 1e6
    del src, dst
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    ms = triton.testing.do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")
    tflops = 2 * 8192**3 / ms / 1e9
    print(f"ceilings on {dev}: copy {copy_gbs:.0f} GB/s (read + write), bf16 matmul 8192^3 {tflops:.0f} TFLOPS")
