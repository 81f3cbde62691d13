#pragma once
/// Mixed precision for a scope: bfloat16 autocast (no loss scaling needed) on the device's type,
/// CUDA (loop.amp) or CPU (loop.amp_cpu). Weights, gradients and optimiser state stay float32.
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/DeviceGuard.h>
#include <torch/torch.h>

#include <string>

namespace afloc::train {

// Whether this CPU does bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX). Without it oneDNN
// emulates bfloat16 and CPU autocast is slower than float32. Only known where GCC can ask the CPU;
// elsewhere (other compilers, other architectures) assumed true, so nothing is claimed wrongly.
inline bool cpu_has_fast_bfloat16() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return true;
#endif
}

// Whether a CUDA device has bfloat16 tensor cores (compute capability 8.0 on, Ampere and later), asked
// the way ATen's convolutions ask before running bfloat16 in cuDNN. Earlier GPUs (V100, T4) emulate
// bfloat16 or fall back to slow kernels. Only call with a CUDA device (a CPU build has no CUDA hooks).
inline bool cuda_has_fast_bfloat16(const torch::Device& device) {
  const c10::DeviceGuard on_device(device);
  return at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8();
}

/// What a run's autocast request becomes on its hardware, and what to tell the user.
struct AutocastPlan {
  bool on = false;
  std::string warning;  ///< empty when nothing needs saying
};

/// `requested`: loop.amp on CUDA, loop.amp_cpu on CPU; `fast_bfloat16`: the device computes bfloat16
/// in hardware. On CUDA autocast is the default, so on a GPU without bfloat16 tensor cores the run
/// falls back to float32 (as PyTorch's torch.autocast does for an unsupported dtype). On CPU it is an
/// explicit request (--amp-cpu), kept with a warning that it will likely be slower.
inline AutocastPlan plan_autocast(bool requested, bool cuda, bool fast_bfloat16) {
  AutocastPlan p;
  p.on = requested && (fast_bfloat16 || !cuda);
  if (requested && !fast_bfloat16)
    p.warning = cuda ? "loop.amp: this GPU has no bfloat16 tensor cores (compute capability below 8.0); training in "
                       "float32 instead (set loop.amp to false to silence this)"
                     : "--amp-cpu: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX); autocast emulates "
                       "them and will likely train slower than float32";
  return p;
}

// The autocast API was renamed in LibTorch 2.4 (a device type argument instead of per-device calls).
class AutocastGuard {
 public:
  AutocastGuard(bool on, const torch::Device& device) : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    const auto type = cuda_ ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
#else
    if (cuda_) {
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
#endif
  }
  ~AutocastGuard() {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(cuda_ ? at::kCUDA : at::kCPU, false);
#else
    if (cuda_) at::autocast::set_enabled(false);
    else at::autocast::set_cpu_enabled(false);
#endif
    at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool on_, cuda_;
};

}  // namespace afloc::train
