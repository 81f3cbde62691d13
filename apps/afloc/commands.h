#pragma once
/// Subcommand registration for the `afloc` program. Each register_* adds a subcommand to the
/// CLI11 app with an options struct it owns and a callback that calls the library.
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

namespace afloc::cli {

/// Options every subcommand shares.
struct GlobalOptions {
  int threads = 0;             ///< 0 = all cores
  std::string device = "cpu";  ///< cpu, cuda, cuda:N
  std::string log_level = "info";
};

/// Applies the global options (threads, log level) and checks --device.
void apply_global(const GlobalOptions& g);
/// Error unless the device string names a device this program can use ("cpu", "cuda", "cuda:N"
/// with N below the device count), saying why (a CPU-only LibTorch, no GPU, no such index).
void check_device(const std::string& device);

void register_text_commands(CLI::App& app, GlobalOptions& g);
void register_model_commands(CLI::App& app, GlobalOptions& g);
void register_data_commands(CLI::App& app, GlobalOptions& g);
void register_train_commands(CLI::App& app, GlobalOptions& g);
void register_eval_commands(CLI::App& app, GlobalOptions& g);
void register_import_commands(CLI::App& app, GlobalOptions& g);
void register_localize_commands(CLI::App& app, GlobalOptions& g);
void register_classify_commands(CLI::App& app, GlobalOptions& g);

/// Builds the whole CLI (used by main and by the test that checks documented defaults).
std::unique_ptr<CLI::App> build_app(GlobalOptions& g);

}  // namespace afloc::cli
