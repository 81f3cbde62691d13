#pragma once
/// Helpers the inference commands share: expanding image arguments into files, and the prompt
/// embedding cache flags.
#include <CLI/CLI.hpp>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "afloc/common/progress.h"
#include "afloc/data/image.h"

namespace afloc::cli {

/// True for .png, .jpg, .jpeg, .dcm, .dicom (any case).
bool is_image_file(const std::string& path);

/// Files as given, folders (recursive, sorted; PNG/JPEG/DICOM), .csv lists (an `image` or `path`
/// column) and .txt lists (one path per line); relative paths in lists are relative to the list's
/// folder. Error naming a CSV without
/// such a column.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

/// ViewPosition values as given to --views: "all" (or nothing) keeps every view (an empty list).
std::vector<std::string> view_positions(const std::vector<std::string>& given);

/// --mimic ROOT [--split S] [--views V,...|all]: the images of a MIMIC-CXR-JPG split (split.csv's
/// value) and views (ViewPosition values), in the metadata's order, as inputs; reports are not
/// needed. --split and --views without --mimic are a usage error.
struct MimicInputFlags {
  std::string root, split = "test";
  std::vector<std::string> views = {"PA", "AP"};
  /// extra_help: what the command also takes from the root (classify: its CheXpert labels).
  void add_to(CLI::App* c, const std::string& extra_help = "");
  /// The split's images; none without --mimic. Rows whose image is missing are counted in a
  /// warning; error naming the root when the split holds no image.
  std::vector<std::string> images() const;
};

/// --dicom-voi auto|minmax|authors: how DICOM stored values become 8 bits (data::DicomVoi).
struct DicomVoiFlag {
  std::string name = "auto";
  void add_to(CLI::App* c);
  data::ImageReadOptions read_options() const;
  /// Adds "dicom_voi" to a run's echoed settings when it is not the default (so that --resume
  /// refuses to mix conversions, and runs made before the flag still resume).
  void echo_into(nlohmann::ordered_json& echo) const;
};

/// Images read for one batch: the readable ones with their paths, the rest kept as (path, error).
struct ImageBatch {
  std::vector<data::Gray8> images;
  std::vector<std::string> names;
};
using Failures = std::vector<std::pair<std::string, std::string>>;

/// Reads paths[start, end) as 8-bit grey; an unreadable file is warned about and added to
/// `failed` (a batch run processes the rest). Ticks `bar` once per path.
ImageBatch read_images(const std::vector<std::string>& paths, size_t start, size_t end, Failures& failed, ProgressBar& bar,
                       const data::ImageReadOptions& read = {});

/// Lists the failed inputs and throws (exit code 1) when there are any.
void report_failures(const Failures& failed, size_t total);

/// An earlier run's records, for --resume (localize, classify).
struct EarlierRun {
  std::map<std::string, std::vector<nlohmann::ordered_json>> done;  ///< image -> its records
  std::vector<std::string> todo;                                     ///< the other inputs, in input order
  int64_t records = 0;                                               ///< records kept
};

/// --resume: reads the results.jsonl of an earlier run into the same folder, after checking that
/// its `echo_file` (the run's models, prompts and options) equals `echo` (Error naming the keys
/// that differ). Keeps the records of the inputs for which `complete` accepts theirs and rewrites
/// results.jsonl with those alone: an input cut short, a failed input's error line and a line cut
/// by a kill go, and those inputs are to do again. Without an earlier run everything is to do.
EarlierRun resume_earlier_run(const std::string& results, const std::string& echo_file, const nlohmann::ordered_json& echo,
                              const std::vector<std::string>& images,
                              const std::function<bool(const std::vector<nlohmann::ordered_json>&)>& complete);

/// Help of --dense-map (localize, eval-phantom): model::AflocConfig::dense_map.
inline constexpr const char* DENSE_MAP_HELP =
    "Shift-and-stitch: heatmaps from a deep map of twice the side (four image-network passes on\n"
    "the input translated by half a cell; same weights). Finer peaks for small findings";

/// Help of --levels (localize, eval-phantom): model::AflocConfig::heatmap_levels.
inline constexpr const char* LEVELS_HELP =
    "Maps the heatmaps read: deep (v_d, the authors'), shallow (v_s, layer2, twice the side) or both\n"
    "(their heatmaps averaged); for models trained with loss.shallow_sentence_weight. Default: the model's";

/// CLI11 check of an integer option: at least `min`. CLI11's PositiveNumber and NonNegativeNumber
/// name their range up to the largest double ("not in range 0.000000 to 1797693...") in the error.
CLI::Validator at_least(long long min);

/// Adds --centre (localize, eval-phantom): the centred reading's weight in [0, 1], 0 = off
/// (infer::centre_maps); `films` says where its reference films come from.
CLI::Option* add_centre_option(CLI::App* c, double& weight, const std::string& films);

/// --prompt-cache DIR / --no-prompt-cache.
struct PromptCacheFlags {
  std::string dir;  ///< "" = the default folder (see infer::default_prompt_cache_dir)
  bool off = false;
  void add_to(CLI::App* c);
  /// The folder to use ("" = memory only).
  std::string resolved() const;
};

}  // namespace afloc::cli
