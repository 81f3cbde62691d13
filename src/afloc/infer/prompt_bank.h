#pragma once
/// Zero-shot classification prompt banks: for each class, positive and negative prompt sets.
/// Chest X-ray categories are built as the authors' classification/prompts.py builds them
/// (severity x subtype x location, "{category}:{sev} {sub} {loc}"; negative "no {category}. "),
/// histopathology from the authors' per-dataset templates, fundus from ours (the authors publish
/// none). Users extend or replace banks with a JSON prompt file (see docs/inference.md).
#include <string>
#include <vector>

namespace afloc::infer {

/// How class scores are formed (SPEC §4).
enum class ClassifyMode {
  kBinary,     ///< per class: softmax over (v_g . mean_pos, v_g . mean_neg); multi-label (CheXpert, NIH)
  kMultiClass  ///< softmax over the classes' positive logits; single-label (histopathology, grades)
};

struct ClassPrompts {
  std::string name;
  std::vector<std::string> pos, neg;  ///< neg may be empty in multi-class mode
};

struct PromptBank {
  std::string name;      ///< e.g. "chexpert5", or the prompt file's path
  std::string modality;  ///< "chest x-ray", "pathology", "fundus" or "custom"
  ClassifyMode mode = ClassifyMode::kBinary;
  std::vector<ClassPrompts> classes;
};

/// The authors' chest X-ray prompts for one category (any case): the severity x subtype x location
/// table when the lower-cased name is in it, "No finding"/"finding" for "no finding", otherwise
/// "Findings suggesting {category lower-cased}" / "no {category}. ".
ClassPrompts cxr_class_prompts(const std::string& category);

/// The pathology datasets' templates (the authors' label2cap): "SICAPV2", "Wsss4luad3",
/// "DHMCLUAD"; fundus (ours): "fundus-dr", "fundus-glaucoma", "fundus-amd". Class names are the
/// dataset's label names. Error naming the dataset and the known ones.
std::vector<ClassPrompts> template_class_prompts(const std::string& dataset);

/// Names of the built-in banks, for --help and error messages.
std::vector<std::string> builtin_bank_names();

/// A built-in bank by name: "chexpert5" (the CheXpert competition tasks), "nih14" (ChestX-ray14),
/// "chexlocalize10", "siim" (pneumothorax), "rsna" (pneumonia), "phantom" (shared/PHANTOM.md's
/// findings), "sicapv2", "wsss4luad3", "dhmcluad" and the fundus banks.
PromptBank builtin_bank(const std::string& name);

/// Chest X-ray bank for any list of categories, as the authors' get_all_text_prompts builds it.
PromptBank cxr_bank(const std::vector<std::string>& categories, ClassifyMode mode = ClassifyMode::kBinary);

/// Reads a JSON prompt file:
///   {"mode": "binary"|"multiclass", "modality": "chest x-ray"|"pathology"|"fundus"|"custom",
///    "dataset": "<template dataset>", "categories": ["Pneumothorax", ...],
///    "classes": {"Name": {"pos": ["..."], "neg": ["..."]}, ...}}
/// "categories" are expanded by the modality's builder (chest x-ray table, or the dataset's
/// templates), then "classes" add to or replace them. Unknown keys, empty prompt lists and
/// non-string prompts are errors naming the file and key.
PromptBank read_prompt_bank(const std::string& path);

/// Checks a bank: at least one class, unique names, non-empty positive sets, negative sets in
/// binary mode, no blank prompt. Error names the bank and the class.
void validate(const PromptBank& bank);

std::string to_string(ClassifyMode mode);
ClassifyMode parse_classify_mode(const std::string& text);

}  // namespace afloc::infer
