// Unit tests of the text pipeline: cleaning, caption sampling, tokenizer, vocab IO and builder,
// model config JSON. Hand-checkable tables. Also the allocator setting of common/.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <cmath>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "afloc/common/allocator.h"
#include "afloc/common/error.h"
#include "afloc/model/config.h"
#include "afloc/text/clean.h"
#include "afloc/text/tokenizer.h"
#include "afloc/text/vocab_builder.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace afloc::text {
namespace {

struct CleanCase {
  const char* raw;
  std::vector<std::string> sentences;
};

TEST(Clean, SentencesFollowTheAuthorsRules) {
  const CleanCase cases[] = {
      {"Heart size is normal. Lungs are clear.", {"heart size is normal", "lungs are clear"}},
      {"1. Small effusion. 2. No pneumothorax.", {"small effusion", "no pneumothorax"}},
      {"A 2.5 cm nodule.", {"5 cm nodule"}},  // "2." is a separator; "a" alone is dropped
      {"pneumothorax", {}},
      {"Tiny. Tiny right effusion.", {"tiny right effusion"}},
      {"line1\nline two here", {"line1 line two here"}},
      {"Café-au-lait", {"caf au lait"}},
      {"ＣＴ scan done", {"scan done"}},
      {"x  ,  y", {"x y"}},
      {"", {}},
      {"snake_case word", {"snake_case word"}},
      {"3rd rib", {"3rd rib"}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(clean_sentences(c.raw), c.sentences) << "raw: " << c.raw;
  }
}

TEST(Clean, PromptJoinsWithSpacesAndOneWordPromptsBecomeEmpty) {
  EXPECT_EQ(clean_prompt("Findings suggesting Pleural Effusion."), "findings suggesting pleural effusion");
  EXPECT_EQ(clean_prompt("No pneumothorax. Heart normal."), "no pneumothorax heart normal");
  EXPECT_EQ(clean_prompt("Pneumonia."), "");
  EXPECT_EQ(clean_prompt("   "), "");
}

TEST(Clean, SampleCaptionDrawsAProperSubsetInRandomOrder) {
  const std::vector<std::string> s = {"a b", "c d", "e f", "g h"};
  std::mt19937_64 rng(7);
  std::set<size_t> sizes;
  std::set<std::string> firsts;
  for (int i = 0; i < 400; ++i) {
    const std::string cap = sample_caption(s, rng);
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
      const size_t p = cap.find(". ", start);
      parts.push_back(cap.substr(start, p == std::string::npos ? std::string::npos : p - start));
      if (p == std::string::npos) break;
      start = p + 2;
    }
    ASSERT_GE(parts.size(), 1u);
    ASSERT_LE(parts.size(), 3u);  // 1..n-1
    std::set<std::string> uniq(parts.begin(), parts.end());
    ASSERT_EQ(uniq.size(), parts.size()) << cap;
    for (const auto& p : parts) ASSERT_TRUE(std::find(s.begin(), s.end(), p) != s.end()) << p;
    sizes.insert(parts.size());
    firsts.insert(parts[0]);
  }
  EXPECT_EQ(sizes.size(), 3u);   // every count 1..3 occurs
  EXPECT_EQ(firsts.size(), 4u);  // order is random
  std::mt19937_64 a(3), b(3);
  EXPECT_EQ(sample_caption(s, a), sample_caption(s, b));
  std::mt19937_64 r(1);
  EXPECT_EQ(sample_caption({"only one"}, r), "only one");
  EXPECT_EQ(sample_caption({}, r), "");
}

TEST(Clean, SampleCaptionIsUniformAndTheSameOnEveryStandardLibrary) {
  // numpy's randint(1, n) then choice(n, k, replace=False): k uniform on 1..n-1, then every ordered
  // k-subset equally likely. With n = 4: k = 1, 2, 3 each 1/3, and each sentence first 1/4.
  const std::vector<std::string> s = {"a", "b", "c", "d"};
  std::mt19937_64 rng(11);
  std::map<size_t, int> by_count;
  std::map<char, int> by_first;
  const int draws = 12000;
  for (int i = 0; i < draws; ++i) {
    const std::string cap = sample_caption(s, rng);
    by_count[(cap.size() + 2) / 3]++;  // "a", "a. b", "a. b. c"
    by_first[cap[0]]++;
  }
  ASSERT_EQ(by_count.size(), 3u);
  for (const auto& [k, c] : by_count) EXPECT_NEAR(c, draws / 3.0, 4 * std::sqrt(draws * (1 / 3.0) * (2 / 3.0))) << "count " << k;
  ASSERT_EQ(by_first.size(), 4u);
  for (const auto& [f, c] : by_first) EXPECT_NEAR(c, draws / 4.0, 4 * std::sqrt(draws * 0.25 * 0.75)) << "first " << f;
  // mt19937_64's stream is fixed by the C++ standard and the sampler maps it by plain modulo, so
  // these captions are what every compiler gives (std::shuffle / uniform_int_distribution would not).
  // The expected string was also derived by a Python mt19937_64 (checked against the standard's
  // 10000th output) running the same k-then-partial-Fisher-Yates draws.
  std::mt19937_64 fixed(2026);
  std::string seq;
  for (int i = 0; i < 4; ++i) seq += sample_caption({"s0", "s1", "s2", "s3", "s4"}, fixed) + " | ";
  EXPECT_EQ(seq, "s0. s2 | s4. s2. s1 | s0. s1 | s3. s4 | ");
}

Vocab small_vocab() {
  return Vocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "heart", "is", "big", "un", "##aff",
                "##ected", ".", ",", "肺", "a", "##b"});
}

TEST(Tokenizer, WordPieceGreedyLongestMatch) {
  const Tokenizer t(small_vocab());
  EXPECT_EQ(t.wordpiece("unaffected"), (std::vector<std::string>{"un", "##aff", "##ected"}));
  EXPECT_EQ(t.wordpiece("unx"), (std::vector<std::string>{"[UNK]"}));
  EXPECT_EQ(t.wordpiece("ab"), (std::vector<std::string>{"a", "##b"}));
}

TEST(Tokenizer, PreTokenizerSplitsPunctuationCjkAndControls) {
  const Tokenizer t(small_vocab());
  EXPECT_EQ(t.pre_tokenize("the heart,is\tbig."),
            (std::vector<std::string>{"the", "heart", ",", "is", "big", "."}));
  EXPECT_EQ(t.pre_tokenize("a肺b"), (std::vector<std::string>{"a", "肺", "b"}));
  EXPECT_EQ(t.pre_tokenize(std::string("a\x01") + "b"), (std::vector<std::string>{"ab"}));
  EXPECT_EQ(t.pre_tokenize("x×y"), (std::vector<std::string>{"x×y"}));  // × is a symbol, not punctuation
}

TEST(Tokenizer, LowercaseAndAccentStripping) {
  TokenizerOptions o;
  o.lowercase = true;
  o.strip_accents = true;
  const Tokenizer t(small_vocab(), o);
  EXPECT_EQ(t.pre_tokenize("THE Héart"), (std::vector<std::string>{"the", "heart"}));
  const Tokenizer cased(small_vocab());
  EXPECT_EQ(cased.pre_tokenize("THE Héart"), (std::vector<std::string>{"THE", "Héart"}));
}

TEST(Tokenizer, TruncatesPadsAndMarksTheMask) {
  TokenizerOptions o;
  o.max_length = 6;
  const Tokenizer t(small_vocab(), o);
  const Encoding e = t.encode("the heart is big the heart");
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"[CLS]", "the", "heart", "is", "big", "[SEP]"}));
  EXPECT_EQ(e.n_real, 6);
  const Encoding p = t.encode("the");
  EXPECT_EQ(p.input_ids, (std::vector<int64_t>{2, 5, 3, 0, 0, 0}));
  EXPECT_EQ(p.attention_mask, (std::vector<int64_t>{1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(p.n_real, 3);
  const Encoding u = t.encode("the", /*pad=*/false);
  EXPECT_EQ(u.input_ids.size(), 3u);
  const Encoding empty = t.encode("");
  EXPECT_EQ(empty.tokens[0], "[CLS]");
  EXPECT_EQ(empty.tokens[1], "[SEP]");
}

TEST(Tokenizer, OverlongWordIsUnknown) {
  const Tokenizer t(small_vocab());
  EXPECT_EQ(t.wordpiece(std::string(101, 'a')), (std::vector<std::string>{"[UNK]"}));
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/afloc_" + name;
}

TEST(Vocab, LoadErrorsNameTheFileAndLine) {
  try {
    Vocab::load("/nonexistent/vocab.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/vocab.txt"), std::string::npos);
  }
  const std::string dup = temp_path("dup.txt");
  std::ofstream(dup) << "[PAD]\n[UNK]\n[CLS]\n[SEP]\nword\nword\n";
  try {
    Vocab::load(dup);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 6"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("duplicate"), std::string::npos) << e.what();
  }
  const std::string nosep = temp_path("nosep.txt");
  std::ofstream(nosep) << "[PAD]\n[UNK]\n[CLS]\nword\n";
  EXPECT_THROW(Vocab::load(nosep), Error);
  const std::string empty = temp_path("empty.txt");
  std::ofstream(empty) << "";
  EXPECT_THROW(Vocab::load(empty), Error);
}

TEST(Vocab, SaveLoadRoundTrip) {
  const Vocab v = small_vocab();
  const std::string p = temp_path("vocab_rt.txt");
  v.save(p);
  const Vocab w = Vocab::load(p);
  EXPECT_EQ(w.tokens(), v.tokens());
  EXPECT_EQ(w.sep_id(), 3);
}

TEST(VocabBuilder, LearnsPiecesCoveringTheCorpusDeterministically) {
  const std::vector<std::string> corpus = {
      "small left pleural effusion. no pneumothorax", "moderate right pleural effusion",
      "large pneumothorax. pleural effusion", "heart size is normal. no effusion"};
  VocabBuildOptions o;
  o.size = 80;
  const Vocab v = build_wordpiece_vocab(corpus, o);
  EXPECT_LE(v.size(), 80);
  EXPECT_EQ(v.token(0), "[PAD]");
  EXPECT_TRUE(v.contains("[UNK]") && v.contains("[CLS]") && v.contains("[SEP]"));
  EXPECT_TRUE(v.contains("p") && v.contains("##l") && v.contains("."));
  EXPECT_TRUE(v.contains("pleural") || v.contains("effusion"));  // most frequent words merge fully
  const Vocab again = build_wordpiece_vocab(corpus, o);
  EXPECT_EQ(v.tokens(), again.tokens());
  const Tokenizer t(v);
  for (const auto& line : corpus) {
    for (const auto& tok : t.encode(line, false).tokens) EXPECT_NE(tok, "[UNK]") << line;
  }
  VocabBuildOptions big;
  big.size = 100000;
  const Vocab all = build_wordpiece_vocab(corpus, big);  // stops when nothing is frequent enough
  EXPECT_LT(all.size(), 100000);
  VocabBuildOptions bad;
  bad.size = 3;
  EXPECT_THROW(build_wordpiece_vocab(corpus, bad), Error);
  EXPECT_THROW(build_wordpiece_vocab({"", "  "}, o), Error);
}

}  // namespace
}  // namespace afloc::text

namespace afloc::model {
namespace {

TEST(Config, PresetsValidateAndRoundTripThroughJson) {
  for (const auto& name : preset_names()) {
    const AflocConfig c = preset(name);
    c.validate();
    const AflocConfig back = parse_config(config_to_string(c), "<test>");
    EXPECT_EQ(config_to_string(back), config_to_string(c));
  }
  const AflocConfig p = preset("paper");
  EXPECT_EQ(p.deep_side(), 19);
  EXPECT_EQ(p.shallow_side(), 38);
  EXPECT_EQ(p.embed_dim(), 768);
  EXPECT_EQ(p.text.max_tokens, 97);
  EXPECT_EQ(p.resnet.depth, 50);
  EXPECT_DOUBLE_EQ(p.loss.temp1, 4.0);
  EXPECT_DOUBLE_EQ(p.loss.temp2, 5.0);
  EXPECT_DOUBLE_EQ(p.loss.temp3, 10.0);
}

TEST(Config, PresetWithOverridesAndStrictErrors) {
  const AflocConfig c = parse_config(R"({"preset": "tiny", "bert": {"num_layers": 3}, "loss": {"use_word": false}})", "x.json");
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.bert.num_layers, 3);
  EXPECT_FALSE(c.loss.use_word);
  // v_d from layer2: the deep map has the shallow map's side.
  const AflocConfig l2 = parse_config(R"({"preset": "paper", "deep_layer": 2})", "x.json");
  EXPECT_EQ(l2.deep_side(), 38);
  // A dilated layer3 keeps layer2's side too, and round-trips through JSON.
  const AflocConfig dil = parse_config(R"({"preset": "tiny", "resnet": {"dilate_layer3": true}})", "x.json");
  EXPECT_EQ(dil.deep_side(), 20);
  EXPECT_EQ(dil.deep_stride(), 8);
  EXPECT_TRUE(parse_config(config_to_string(dil), "<test>").resnet.dilate_layer3);
  // Shift-and-stitch doubles v_d's side at the network's own stride.
  const AflocConfig dense = parse_config(R"({"preset": "tiny", "dense_map": true})", "x.json");
  EXPECT_EQ(dense.deep_side(), 20);
  EXPECT_EQ(dense.deep_stride(), 8);
  EXPECT_EQ(dense.network_stride(), 16);
  EXPECT_TRUE(parse_config(config_to_string(dense), "<test>").dense_map);
  EXPECT_FALSE(preset("tiny").dense_map);
  EXPECT_EQ(parse_config(R"({"preset": "paper", "resnet": {"depth": 10}})", "x.json").resnet.depth, 10);
  auto msg = [](const std::string& text) {
    try {
      parse_config(text, "run.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg(R"({"bert": {"hidden": 3}})").find("config.bert.hidden: unknown key"), std::string::npos);
  EXPECT_NE(msg(R"({"resnet": {"depth": 101}})").find("resnet.depth = 101"), std::string::npos);
  EXPECT_NE(msg(R"({"deep_layer": 4})").find("deep_layer = 4: expected 2 or 3"), std::string::npos);
  EXPECT_NE(msg(R"({"image_size": "big"})").find("config.image_size: wrong type"), std::string::npos);
  EXPECT_NE(msg(R"({"bert": {"num_heads": 5}})").find("bert.num_heads"), std::string::npos);
  EXPECT_NE(msg("{not json").find("run.json: invalid JSON"), std::string::npos);
  EXPECT_NE(msg(R"({"preset": "huge"})").find("unknown model preset 'huge'"), std::string::npos);
  EXPECT_NE(msg(R"({"loss": {"use_word": false, "use_sentence": false, "use_report": false}})").find("at least one"),
            std::string::npos);
  EXPECT_NE(msg(R"({"loss": {"region_report_weight": -1}})").find("loss.region_report_weight = -1.0: must be >= 0"), std::string::npos);
  EXPECT_NE(msg(R"({"loss": {"region_report_gamma": 0}})").find("loss.region_report_gamma = 0.0: must be > 0"), std::string::npos);
  const AflocConfig mil = parse_config(R"({"preset": "tiny", "loss": {"region_report_weight": 0.5, "region_report_gamma": 4}})", "x.json");
  const AflocConfig back = parse_config(config_to_string(mil), "<test>");
  EXPECT_DOUBLE_EQ(back.loss.region_report_weight, 0.5);
  EXPECT_DOUBLE_EQ(back.loss.region_report_gamma, 4.0);
  EXPECT_EQ(preset("paper").loss.region_report_weight, 0.0);
  // Two map levels and the sentence–shallow term: JSON round trip, errors naming the field.
  const AflocConfig two = parse_config(
      R"({"preset": "tiny", "heatmap_levels": "both", "loss": {"shallow_sentence_weight": 0.5}})", "x.json");
  const AflocConfig two_back = parse_config(config_to_string(two), "<test>");
  EXPECT_EQ(two_back.heatmap_levels, "both");
  EXPECT_TRUE(two_back.reads_shallow());
  EXPECT_DOUBLE_EQ(two_back.loss.shallow_sentence_weight, 0.5);
  EXPECT_EQ(preset("paper").heatmap_levels, "deep");
  for (const auto& level : heatmap_level_names()) {  // the list the CLI's --levels accepts
    EXPECT_EQ(parse_config(R"({"heatmap_levels": ")" + level + R"("})", "x.json").heatmap_levels, level);
  }
  EXPECT_EQ(heatmap_level_names().size(), 3u);
  EXPECT_FALSE(preset("tiny").reads_shallow());
  EXPECT_NE(msg(R"({"heatmap_levels": "all"})").find("heatmap_levels = 'all': expected deep, shallow or both"),
            std::string::npos);
  EXPECT_NE(msg(R"({"loss": {"shallow_sentence_weight": -0.1}})").find("loss.shallow_sentence_weight = -0.1: must be >= 0"),
            std::string::npos);
  EXPECT_THROW(load_config("/nonexistent/run.json"), Error);
}

}  // namespace
}  // namespace afloc::model

namespace afloc {
namespace {

TEST(Allocator, KeepFreedMemoryServesLargeBlocksFromTheHeapUnlessTheUserTunedMalloc) {
  const char* vars[] = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"};
  for (const char* v : vars) ::unsetenv(v);
#if defined(__GLIBC__)
  // The user's own malloc settings win.
  for (const char* v : vars) {
    ::setenv(v, "1", 1);
    EXPECT_FALSE(keep_freed_memory()) << v;
    ::unsetenv(v);
  }
  ASSERT_TRUE(keep_freed_memory());
#if __GLIBC__ > 2 || __GLIBC_MINOR__ >= 33  // mallinfo2
  // 64 MiB is above the largest mmap threshold glibc reaches by itself (32 MiB): by default such a
  // block is a fresh mapping, unmapped on free. Kept, it comes from the heap.
  const size_t mapped_before = mallinfo2().hblkhd;
  void* p = std::malloc(size_t{64} << 20);
  ASSERT_NE(p, nullptr);
  static_cast<volatile char*>(p)[0] = 1;
  const size_t mapped_during = mallinfo2().hblkhd;
  std::free(p);
  EXPECT_EQ(mapped_during, mapped_before);
#endif
#else
  EXPECT_FALSE(keep_freed_memory());
#endif
}

}  // namespace
}  // namespace afloc
