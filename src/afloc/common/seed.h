#pragma once
/// Deterministic seed derivation: every random stream in afloc (epoch order, captions, dropout per
/// step, phantom studies) is seeded from the run seed mixed with what it belongs to, so results do
/// not depend on thread counts or timing.
#include <cstdint>

namespace afloc {

/// SplitMix64 finaliser of (a, b): well-spread 64-bit seeds for nearby inputs.
inline uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ULL + b + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// A uniform index in [0, n) from one 64-bit draw (n > 0). A plain modulo rather than
/// std::uniform_int_distribution, whose mapping differs between libstdc++, libc++ and MSVC: every
/// seeded choice in afloc (epoch order, captions, bootstrap resamples) must be the same wherever it
/// is built. The modulo's bias, n / 2^64, is far below anything these draws feed.
inline uint64_t index_below(uint64_t draw, uint64_t n) { return draw % n; }

}  // namespace afloc
