#pragma once
/// Report and prompt cleaning exactly as the authors' `process_text` and pretraining dataset do
/// (SPEC §2; golden: text_preprocessing.jsonl `cleaned`).
#include <random>
#include <string>
#include <vector>

namespace afloc::text {

/// Splits raw text into sentences and cleans each one:
///  1. newlines -> spaces; split on `[0-9]+\.` (numbered-list markers, which also eats a number
///     before a dot: "2.5 cm" -> "5 cm") and then on every '.';
///  2. per piece: Python `lower()`, keep the `\w+` runs (Unicode `\w`);
///  3. drop pieces with <= 1 run (counted before step 4, as the authors do);
///  4. drop non-ASCII characters inside each run, drop runs that become empty; join with ' '.
/// Returns the kept sentences in order (possibly none).
std::vector<std::string> clean_sentences(const std::string& raw);

/// Prompt cleaning (`process_text`): the kept sentences joined with a single space. A one-word
/// prompt ("pneumothorax") becomes the empty string, as in the authors' code.
std::string clean_prompt(const std::string& raw);

/// Training-time caption from a report's cleaned sentences (pretraining dataset, random_combine
/// mode 1): with n >= 2 sentences, k ~ U{1..n-1} distinct sentences in random order; with one
/// sentence, that sentence. Joined with ". ". Empty input -> "".
std::string sample_caption(const std::vector<std::string>& sentences, std::mt19937_64& rng);

/// All sentences in order joined with ". " (the deterministic caption, e.g. for validation).
std::string join_caption(const std::vector<std::string>& sentences);

}  // namespace afloc::text
