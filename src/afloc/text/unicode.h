#pragma once
/// Unicode helpers over ICU: UTF-8 <-> code points, character classes as Python's `re` and
/// Hugging Face `tokenizers` (Rust) define them, case mapping and NFD.
#include <string>

namespace afloc::text::unicode {

/// Decodes UTF-8; each ill-formed sequence becomes U+FFFD (never throws).
std::u32string decode_utf8(const std::string& s);
/// Encodes code points as UTF-8.
std::string encode_utf8(const std::u32string& s);
/// True when s is well-formed UTF-8.
bool is_valid_utf8(const std::string& s);

/// Python `str.lower()`: full lowercase mapping with the Final_Sigma context rule.
std::u32string python_lower(const std::u32string& s);
/// Rust `char::to_lowercase` applied char by char (full mapping, no context), as
/// `tokenizers`' NormalizedString::lowercase does.
std::u32string char_lower(const std::u32string& s);
/// Canonical decomposition (NFD).
std::u32string nfd(const std::u32string& s);

/// Python `re` `\w` for str patterns: alphabetic (L*), any Numeric_Type, or '_'.
bool is_python_word(char32_t c);
/// Rust `char::is_whitespace` (White_Space property).
bool is_whitespace(char32_t c);
/// General category C* (Cc, Cf, Cs, Co, Cn): `tokenizers`' is_control uses `is_other`.
bool is_other(char32_t c);
/// BERT punctuation: ASCII punctuation or general category P*.
bool is_bert_punctuation(char32_t c);
/// General category Mn.
bool is_nonspacing_mark(char32_t c);
/// The CJK Unified Ideograph blocks BERT pads with spaces.
bool is_cjk(char32_t c);

}  // namespace afloc::text::unicode
