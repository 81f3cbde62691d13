#pragma once
/// Data-parallel training on torch's c10d: Gloo on CPU, NCCL on CUDA (when LibTorch was built with
/// it). Processes are started the way PyTorch users start them: RANK, WORLD_SIZE, LOCAL_RANK,
/// MASTER_ADDR, MASTER_PORT (torchrun-style launchers, Kubernetes), or Slurm's SLURM_PROCID,
/// SLURM_NTASKS, SLURM_LOCALID with MASTER_ADDR/MASTER_PORT exported by the batch script.
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "afloc/model/image_encoder.h"
#include "afloc/model/text_encoder.h"

namespace afloc::train {

/// Where this process sits in the job.
struct DistEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool enabled() const { return world > 1; }
};

/// Reads the launcher's environment; world 1 when none is set. Error naming the variable for a
/// malformed or inconsistent value (rank outside 0..world-1, a port outside 1..65535).
DistEnv dist_env_from_environment();

/// Collectives over all ranks; with world 1 every call is a no-op (or the identity).
class Communicator {
 public:
  /// Connects to the job's other processes (rank 0 hosts the TCP store). Error after `timeout`
  /// naming MASTER_ADDR:MASTER_PORT when they do not all arrive.
  Communicator(const DistEnv& env, const torch::Device& device,
               std::chrono::milliseconds timeout = std::chrono::minutes(10));
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  bool is_main() const { return env_.rank == 0; }

  /// Rank 0's values into everyone's tensors (in place).
  void broadcast(std::vector<torch::Tensor> tensors);
  /// Sum (average = false) or mean over ranks of every defined gradient, in place, in one
  /// flattened buffer per dtype.
  void allreduce_gradients(const std::vector<torch::Tensor>& params, bool average);
  /// Element-wise sum over ranks (in place).
  void allreduce_sum(torch::Tensor& t);
  /// Concatenation over ranks along dim 0 (equal sizes); the local part keeps its autograd
  /// history, the others are constants (each rank then back-propagates into its own samples).
  torch::Tensor all_gather(const torch::Tensor& local);
  model::ImageEmbeddings all_gather(const model::ImageEmbeddings& e);
  model::TextEmbeddings all_gather(const model::TextEmbeddings& e);
  void barrier();

 private:
  struct Impl;
  DistEnv env_;
  torch::Device device_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace afloc::train
