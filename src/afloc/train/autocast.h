#pragma once
/// Mixed precision for a scope: bfloat16 autocast (no loss scaling needed) on the device's type,
/// CUDA (loop.amp) or CPU (loop.amp_cpu). Weights, gradients and optimiser state stay float32.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

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
