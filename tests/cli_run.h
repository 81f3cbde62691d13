#pragma once
// Runs the `afloc` program (AFLOC_BIN) as a user would and captures its exit code and output.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace afloc::test {

struct CliRun {
  int code;
  std::string out;  // stdout + stderr
};

/// env: "NAME=value ..." prefixed to the command (shell syntax).
inline CliRun run_cli_env(const std::string& env, const std::string& args) {
  const std::string cmd = env + " " + std::string(AFLOC_BIN) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

inline CliRun run_cli(const std::string& args) { return run_cli_env("", args); }

}  // namespace afloc::test
