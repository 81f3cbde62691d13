#pragma once
// Tensor comparison for golden tests: prints the max abs difference and checks NaN positions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

namespace afloc::test {

/// Max |a - b| over positions where neither is NaN.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor x = a.detach().to(torch::kCPU, torch::kDouble);
  const torch::Tensor y = b.detach().to(torch::kCPU, torch::kDouble);
  const torch::Tensor ok = x.isnan().logical_not().logical_and(y.isnan().logical_not());
  if (ok.sum().item<int64_t>() == 0) return 0.0;
  return (x - y).abs().masked_select(ok).max().item<double>();
}

/// Expects equal shapes, identical NaN positions and max |a - b| <= atol; prints the difference.
inline void expect_close(const std::string& what, const torch::Tensor& actual,
                         const torch::Tensor& expected, double atol) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const auto a_nan = actual.detach().to(torch::kCPU).isnan();
  const auto e_nan = expected.detach().to(torch::kCPU).isnan();
  EXPECT_TRUE(torch::equal(a_nan, e_nan)) << what << ": NaN positions differ ("
                                          << a_nan.sum().item<int64_t>() << " vs "
                                          << e_nan.sum().item<int64_t>() << ")";
  const double d = max_abs_diff(actual, expected);
  std::printf("[golden] %-48s max|diff| = %.3g (atol %.0e)\n", what.c_str(), d, atol);
  EXPECT_LE(d, atol) << what;
}

}  // namespace afloc::test
