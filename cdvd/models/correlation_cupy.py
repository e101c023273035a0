"""CUDA correlation kernel (forward and backward) compiled at run time with cupy.

Only imported for CUDA tensors when cupy is installed. Inputs of any floating dtype are computed in float32 and the
result is cast back to the input dtype, so half and bfloat16 autocast regions work.
"""

from __future__ import annotations

import functools

import torch

from cdvd.models.correlation_window import MAX_DISPLACEMENT, NUM_DISPLACEMENTS

_SOURCE = r"""
#define D MAX_DISP
#define K (2 * D + 1)

extern "C" __global__ void corr_forward(
    const float* __restrict__ first, const float* __restrict__ second, float* __restrict__ out,
    const int B, const int C, const int H, const int W) {
  // one thread per output element (b, k, y, x)
  const long long n = (long long)B * K * K * H * W;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const int x = i % W;
    const int y = (i / W) % H;
    const int k = (i / ((long long)W * H)) % (K * K);
    const int b = i / ((long long)W * H * K * K);
    const int dy = k / K - D;
    const int dx = k % K - D;
    const int y2 = y + dy;
    const int x2 = x + dx;
    float acc = 0.f;
    if (y2 >= 0 && y2 < H && x2 >= 0 && x2 < W) {
      const long long plane = (long long)H * W;
      const float* f1 = first + (long long)b * C * plane + (long long)y * W + x;
      const float* f2 = second + (long long)b * C * plane + (long long)y2 * W + x2;
      for (int c = 0; c < C; ++c) acc += f1[c * plane] * f2[c * plane];
    }
    out[i] = acc / C;
  }
}

extern "C" __global__ void corr_backward(
    const float* __restrict__ grad, const float* __restrict__ first, const float* __restrict__ second,
    float* __restrict__ grad_first, float* __restrict__ grad_second,
    const int B, const int C, const int H, const int W) {
  // one thread per input element (b, c, y, x); writes both gradients without atomics
  const long long n = (long long)B * C * H * W;
  const long long plane = (long long)H * W;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    const int x = i % W;
    const int y = (i / W) % H;
    const int c = (i / plane) % C;
    const int b = i / (plane * C);
    const float* g = grad + (long long)b * K * K * plane;
    const float* f1 = first + ((long long)b * C + c) * plane;
    const float* f2 = second + ((long long)b * C + c) * plane;
    float acc1 = 0.f;  // d out[k, y, x] / d first[c, y, x] = second[c, y + dy, x + dx] / C
    float acc2 = 0.f;  // d out[k, y - dy, x - dx] / d second[c, y, x] = first[c, y - dy, x - dx] / C
    for (int k = 0; k < K * K; ++k) {
      const int dy = k / K - D;
      const int dx = k % K - D;
      const int ya = y + dy, xa = x + dx;
      if (ya >= 0 && ya < H && xa >= 0 && xa < W)
        acc1 += g[k * plane + (long long)y * W + x] * f2[(long long)ya * W + xa];
      const int yb = y - dy, xb = x - dx;
      if (yb >= 0 && yb < H && xb >= 0 && xb < W)
        acc2 += g[k * plane + (long long)yb * W + xb] * f1[(long long)yb * W + xb];
    }
    grad_first[i] = acc1 / C;
    grad_second[i] = acc2 / C;
  }
}
""".replace("MAX_DISP", str(MAX_DISPLACEMENT))

_THREADS = 256


@functools.cache
def _kernels(device_index: int):  # noqa: ANN202 - cupy types
    import cupy

    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=_SOURCE)
        return module.get_function("corr_forward"), module.get_function("corr_backward")


def _launch(kernel, n: int, args: tuple, device: torch.device) -> None:  # noqa: ANN001
    import cupy

    blocks = min((n + _THREADS - 1) // _THREADS, 65535 * 8)
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
    with cupy.cuda.Device(device.index), stream:
        kernel((max(blocks, 1),), (_THREADS,), args)


class _CorrelationFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        dtype = first.dtype
        first32 = first.detach().float().contiguous()
        second32 = second.detach().float().contiguous()
        ctx.save_for_backward(first32, second32)
        ctx.input_dtypes = (first.dtype, second.dtype)
        b, c, h, w = first32.shape
        out = torch.empty((b, NUM_DISPLACEMENTS, h, w), device=first.device, dtype=torch.float32)
        forward_kernel, _ = _kernels(first.device.index)
        _launch(
            forward_kernel,
            out.numel(),
            (first32.data_ptr(), second32.data_ptr(), out.data_ptr(), b, c, h, w),
            first.device,
        )
        return out.to(dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        first32, second32 = ctx.saved_tensors
        grad32 = grad.float().contiguous()
        b, c, h, w = first32.shape
        grad_first = torch.empty_like(first32)
        grad_second = torch.empty_like(second32)
        _, backward_kernel = _kernels(first32.device.index)
        _launch(
            backward_kernel,
            first32.numel(),
            (
                grad32.data_ptr(),
                first32.data_ptr(),
                second32.data_ptr(),
                grad_first.data_ptr(),
                grad_second.data_ptr(),
                b,
                c,
                h,
                w,
            ),
            first32.device,
        )
        return grad_first.to(ctx.input_dtypes[0]), grad_second.to(ctx.input_dtypes[1])


def correlation_cupy(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Same contract as :func:`cdvd.models.correlation.correlation_torch`, on CUDA tensors only."""
    if not (first.is_cuda and second.is_cuda):
        raise ValueError("correlation_cupy needs CUDA tensors")
    if first.shape != second.shape or first.dim() != 4:
        raise ValueError(
            f"correlation expects two (B, C, H, W) tensors of one shape, instead got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    return _CorrelationFunction.apply(first, second)
