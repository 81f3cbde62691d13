// Local alignment loss: the batched implementation vs the authors' per-caption loop (same math,
// reference twin), forward + backward, at the paper's deep-level shape (19x19 regions, sentences)
// and the tiny config's word level. Report the ratio loop/batched from the same run.
//   build/bin/bench_loss --benchmark_min_time=2
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "afloc/common/threads.h"
#include "afloc/loss/alignment.h"

namespace {

struct Case {
  torch::Tensor img, units, lens_t;
  std::vector<int64_t> lens;
};

Case make_case(int64_t b, int64_t d, int64_t side, int64_t t) {
  torch::manual_seed(0);
  Case c;
  c.img = torch::randn({b, d, side, side}, torch::requires_grad());
  c.units = torch::randn({b, d, t}, torch::requires_grad());
  for (int64_t i = 0; i < b; ++i) c.lens.push_back(2 + (i * 7) % (t - 1));
  c.lens_t = torch::tensor(c.lens);
  return c;
}

void run(benchmark::State& state, bool batched) {
  const Case c = make_case(state.range(0), state.range(1), state.range(2), state.range(3));
  for (auto _ : state) {
    torch::Tensor l;
    if (batched) {
      const auto r = afloc::loss::local_loss(c.img, c.units, c.lens_t);
      l = r.loss0 + r.loss1;
    } else {
      const auto [l0, l1] = afloc::loss::local_loss_reference(c.img, c.units, c.lens);
      l = l0 + l1;
    }
    l.backward();
    benchmark::DoNotOptimize(l.item<float>());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_LocalLossBatched(benchmark::State& s) { run(s, true); }
void BM_LocalLossLoop(benchmark::State& s) { run(s, false); }

// {batch, dim, side, units}: paper deep level (sentences), tiny word level.
#define AFLOC_ARGS ->Args({32, 768, 19, 8})->Args({32, 128, 20, 40})->Unit(benchmark::kMillisecond)
BENCHMARK(BM_LocalLossBatched) AFLOC_ARGS;
BENCHMARK(BM_LocalLossLoop) AFLOC_ARGS;

}  // namespace

int main(int argc, char** argv) {
  afloc::set_threads(0);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
