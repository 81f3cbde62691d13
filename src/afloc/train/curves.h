#pragma once
/// Training curves: a run's metrics.jsonl read back, and drawn as a PNG (the loss a user watches,
/// validation loss, the loss terms or the learning rate). The trainer redraws RUN/curves.png at
/// every checkpoint; `afloc curves` draws one or several runs.
#include <string>
#include <vector>

namespace afloc::train {

/// One run's logged values (metrics.jsonl lines with "loss", and lines with "val_loss").
struct RunCurves {
  std::string name;
  std::vector<double> step, loss, lr;  ///< per logged step: running mean training loss, learning rate
  /// Loss terms per logged step, in the order of `term_names` (absent terms are not listed).
  std::vector<std::string> term_names;
  std::vector<std::vector<double>> terms;
  std::vector<double> val_step, val_loss;  ///< per epoch end
  int64_t bad_lines = 0;                   ///< lines that are not JSON objects (a line cut by a kill)
};

/// A run's name in legends: its folder's name ("runs/x/" -> "x").
std::string run_name(const std::string& run_dir);

/// Reads metrics.jsonl. Lines that do not parse are counted, not fatal; error naming the file when
/// it cannot be read (a run with nothing logged yet gives empty curves).
RunCurves read_curves(const std::string& metrics_jsonl, const std::string& name);

/// Draws the runs as a PNG of two panels: training loss (lines) and validation loss (dots) per
/// run; then, for one run, its loss terms, for several, their learning rates. Error naming the
/// file when it cannot be written.
void plot_curves(const std::vector<RunCurves>& runs, const std::string& png_path);

}  // namespace afloc::train
