// The `afloc` program: parses arguments, runs one subcommand, maps errors to exit codes
// (1 = error, 2 = usage).
#include <cstdio>

#include <c10/util/Exception.h>

#include "afloc/common/error.h"
#include "afloc/common/log.h"
#include "afloc/common/threads.h"
#include "afloc/common/version.h"
#include "commands.h"

namespace afloc::cli {

void apply_global(const GlobalOptions& g) {
  log::set_level(log::parse_level(g.log_level));
  check_device(g.device);
  const int n = set_threads(g.threads);
  log::debug("threads: " + std::to_string(n));
}

std::unique_ptr<CLI::App> build_app(GlobalOptions& g) {
  auto app = std::make_unique<CLI::App>(
      "afloc: annotation-free pathology localization (AFLoc) in C++.\n"
      "Pretrain on image-report pairs, localize and diagnose findings for any prompt.",
      "afloc");
  app->set_version_flag("-V,--version", std::string("afloc ") + version() + " (" + git_revision() + ")");
  app->require_subcommand(1);
  app->fallthrough();
  app->option_defaults()->always_capture_default();
  app->add_option("-t,--threads", g.threads, "Intra-op threads (0 = all cores)");
  app->add_option("--device", g.device, "Device: cpu, cuda or cuda:N");
  app->add_option("--log-level", g.log_level, "debug, info, warn, error or quiet")
      ->check(CLI::IsMember({"debug", "info", "warn", "error", "quiet"}));
  register_text_commands(*app, g);
  register_model_commands(*app, g);
  register_data_commands(*app, g);
  register_train_commands(*app, g);
  register_eval_commands(*app, g);
  register_import_commands(*app, g);
  register_localize_commands(*app, g);
  register_classify_commands(*app, g);
  return app;
}

}  // namespace afloc::cli

int main(int argc, char** argv) {
  afloc::cli::GlobalOptions g;
  std::unique_ptr<CLI::App> app;
  try {
    app = afloc::cli::build_app(g);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "afloc: internal error building the CLI: %s\n", e.what());
    return 1;
  }
  try {
    app->parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app->exit(e);
    return code == 0 ? 0 : 2;
  } catch (const afloc::Error& e) {
    std::fprintf(stderr, "afloc: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "afloc: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "afloc: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
