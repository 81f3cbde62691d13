#pragma once
/// The phantom chest X-ray world (shared/PHANTOM.md): synthetic frontal radiographs with free-text
/// MIMIC-style reports and hidden ground-truth masks, rendered deterministically from a seed.
#include <cstdint>
#include <string>
#include <vector>

#include "afloc/data/rle.h"

namespace afloc::data::phantom {

/// Findings the world knows. kGroundGlass is the "unseen" finding (COVID-Rural style): never
/// rendered in, nor named by, pretraining studies.
enum class Finding {
  kEffusion,
  kPneumothorax,
  kConsolidation,
  kNodule,
  kMass,
  kAtelectasis,
  kEdema,
  kCardiomegaly,
  kGroundGlass,
};
constexpr int kNumFindings = 9;
/// The findings pretraining studies may hold (all but kGroundGlass).
std::vector<Finding> seen_findings();

/// Category name as the public datasets spell it ("Pleural Effusion", "Pneumothorax", ...).
std::string category(Finding f);
/// Lower-case name used in prompts ("pleural effusion", "pneumothorax", ...).
std::string prompt_name(Finding f);
/// CheXlocalize task the finding belongs to ("Pleural Effusion", "Lung Lesion", ...).
std::string chexlocalize_task(Finding f);
/// Parses a category or prompt name (case-insensitive); Error listing the names otherwise.
Finding parse_finding(const std::string& name);

struct Box {
  int64_t x = 0, y = 0, w = 0, h = 0;  ///< pixels, top-left corner and size
};

/// One finding in one image: its mask, boxes (one per connected side), and the report sentence
/// that describes it.
struct Instance {
  Finding finding = Finding::kEffusion;
  std::string side;      ///< "left", "right" or "bilateral" (the patient's side)
  std::string zone;      ///< "upper", "middle", "lower", "apex", "lateral", "base", "heart", "perihilar"
  std::string severity;  ///< "small", "moderate", "large", "mild", "severe" or ""
  Mask mask;
  std::vector<Box> boxes;
  std::string sentence;  ///< the FINDINGS sentence that describes it (as written in the report)
};

/// A rendered study.
struct Study {
  int64_t size = 0;
  std::vector<uint8_t> pixels;  ///< (size, size) 8-bit grey, MONOCHROME2
  std::string findings;         ///< FINDINGS paragraph
  std::string impression;       ///< IMPRESSION paragraph
  std::vector<Instance> instances;
  /// Findings the report denies ("No pleural effusion.", "The heart size is normal."): what a
  /// report labeler such as CheXpert's marks negative (0.0) rather than unmentioned (blank).
  std::vector<Finding> denied;
  /// The whole report as written to disk ("FINDINGS: ...\n\nIMPRESSION: ...").
  std::string report() const;
};

struct PhantomOptions {
  int64_t size = 224;             ///< image side in pixels (square)
  double normal_fraction = 1.0 / 3.0;
  int max_findings = 3;
  bool unseen = false;            ///< render the unseen finding (ground glass) instead of seen ones
};

/// Renders one study. Deterministic in (seed, options); different seeds give different anatomy,
/// findings, acquisition and wording.
Study render_study(uint64_t seed, const PhantomOptions& options = {});

}  // namespace afloc::data::phantom
