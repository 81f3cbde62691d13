#include "afloc/train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

#include "afloc/common/error.h"
#include "afloc/common/log.h"

namespace afloc::train {
namespace {

bool get_int(const char* name, int& out) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  try {
    size_t used = 0;
    out = std::stoi(v, &used);
    if (used != std::string(v).size()) throw std::invalid_argument(v);
  } catch (const std::exception&) {
    throw Error(std::string("environment variable ") + name + "='" + v + "': expected an integer");
  }
  return true;
}

}  // namespace

DistEnv dist_env_from_environment() {
  DistEnv e;
  const bool torchrun = get_int("WORLD_SIZE", e.world);
  if (torchrun) {
    if (!get_int("RANK", e.rank)) throw Error("WORLD_SIZE is set but RANK is not");
    if (!get_int("LOCAL_RANK", e.local_rank)) e.local_rank = 0;
  } else if (get_int("SLURM_NTASKS", e.world)) {
    get_int("SLURM_PROCID", e.rank);
    if (!get_int("SLURM_LOCALID", e.local_rank)) e.local_rank = 0;
    if (e.world > 1 && !std::getenv("MASTER_ADDR")) {
      throw Error("Slurm job with SLURM_NTASKS=" + std::to_string(e.world) +
                  " but no MASTER_ADDR: export MASTER_ADDR (the first node) and MASTER_PORT in the batch script");
    }
  }
  if (const char* a = std::getenv("MASTER_ADDR")) e.master_addr = a;
  get_int("MASTER_PORT", e.master_port);
  if (e.world < 1) throw Error("WORLD_SIZE=" + std::to_string(e.world) + ": must be >= 1");
  if (e.rank < 0 || e.rank >= e.world) {
    throw Error("RANK=" + std::to_string(e.rank) + " outside 0.." + std::to_string(e.world - 1));
  }
  if (e.master_port < 1 || e.master_port > 65535) throw Error("MASTER_PORT=" + std::to_string(e.master_port) + ": not a port");
  return e;
}

// The collectives' common base: ProcessGroupGloo and ProcessGroupNCCL derive from ProcessGroup up
// to LibTorch 1.13 and from Backend since 2.0 (the ProcessGroup of 2.x dispatches to Backends).
#if TORCH_VERSION_MAJOR >= 2
using Collectives = c10d::Backend;
#else
using Collectives = c10d::ProcessGroup;
#endif

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Collectives> pg;
};

Communicator::Communicator(const DistEnv& env, const torch::Device& device, std::chrono::milliseconds timeout)
    : env_(env), device_(device), impl_(std::make_unique<Impl>()) {
  if (!env_.enabled()) return;
  const std::string where = env_.master_addr + ":" + std::to_string(env_.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env_.master_port);
    so.isServer = env_.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env_.world);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, so);
    if (device_.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env_.rank, env_.world, o);
#else
      throw Error("this LibTorch has no NCCL; CUDA tensors cannot be reduced");
#endif
    } else {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      // Loopback when every rank is on this host, the resolved host name otherwise.
      const bool local = env_.master_addr == "127.0.0.1" || env_.master_addr == "localhost";
      o->devices.push_back(local ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                 : c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env_.rank, env_.world, o);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("distributed start (rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.world) + ", store " +
                where + "): " + e.what());
  }
  log::info("distributed: rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.world) + " via " + where +
            (device_.is_cuda() ? " (NCCL)" : " (Gloo)"));
}

Communicator::~Communicator() = default;

void Communicator::broadcast(std::vector<torch::Tensor> tensors) {
  if (!env_.enabled() || tensors.empty()) return;
  torch::NoGradGuard ng;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one{t.detach()};
    impl_->pg->broadcast(one)->wait();
  }
}

void Communicator::allreduce_gradients(const std::vector<torch::Tensor>& params, bool average) {
  if (!env_.enabled()) return;
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return;
  // One flat buffer: one collective per step instead of one per parameter.
  std::vector<torch::Tensor> flat_parts;
  for (const auto& g : grads) flat_parts.push_back(g.reshape(-1));
  std::vector<torch::Tensor> flat{torch::cat(flat_parts)};
  impl_->pg->allreduce(flat)->wait();
  if (average) flat[0].div_(env_.world);
  int64_t off = 0;
  for (auto& g : grads) {
    const int64_t n = g.numel();
    g.copy_(flat[0].slice(0, off, off + n).view_as(g));
    off += n;
  }
}

void Communicator::allreduce_sum(torch::Tensor& t) {
  if (!env_.enabled()) return;
  std::vector<torch::Tensor> one{t};
  impl_->pg->allreduce(one)->wait();
}

torch::Tensor Communicator::all_gather(const torch::Tensor& local) {
  if (!env_.enabled()) return local;
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < env_.world; ++r) out[0].push_back(torch::empty_like(local));
  std::vector<torch::Tensor> in{local.detach().contiguous()};
  impl_->pg->allgather(out, in)->wait();
  out[0][static_cast<size_t>(env_.rank)] = local;  // keeps the graph into this rank's samples
  return torch::cat(out[0], 0);
}

model::ImageEmbeddings Communicator::all_gather(const model::ImageEmbeddings& e) {
  if (!env_.enabled()) return e;
  return {all_gather(e.shallow), all_gather(e.deep), all_gather(e.global),
          e.global_feat.defined() ? all_gather(e.global_feat) : e.global_feat};
}

model::TextEmbeddings Communicator::all_gather(const model::TextEmbeddings& e) {
  if (!env_.enabled()) return e;
  model::TextEmbeddings g;
  g.words = all_gather(e.words);
  g.sentences = all_gather(e.sentences);
  g.report = all_gather(e.report);
  // Lengths live on the CPU; Gloo gathers CPU tensors, NCCL device ones.
  g.word_lens = all_gather(e.word_lens.to(device_)).cpu();
  g.sent_lens = all_gather(e.sent_lens.to(device_)).cpu();
  if (e.sent_negated.defined()) g.sent_negated = all_gather(e.sent_negated.to(device_, torch::kUInt8)).cpu().to(torch::kBool);
  return g;
}

void Communicator::barrier() {
  if (!env_.enabled()) return;
  impl_->pg->barrier()->wait();
}

}  // namespace afloc::train
