// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), written
// once for host and device so the CPU and every CUDA kernel draw the identical stream for the same
// (key, counter). Counter-based: any element's number is computed directly from its index, which
// is what lets a fused kernel, an unfused path and the CPU reference produce the same masks.
#pragma once
#include <cstdint>

#include "core/host_device.h"

namespace tdrop {

struct Philox4 {
  uint32_t v[4];
};

TDROP_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  // The same bits in 32-bit halves: written as one 64-bit product, the device compiler carried
  // the whole round in 64-bit multiplies, shifts and xors (seen in the PTX).
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#endif
}

// The same product as one mul.wide.u32 on the device, which ptxas emits as one IMAD.WIDE.U32
// where __umulhi and a multiply may become two instructions (they do in the fused kernel's
// aligned steps: 99 SASS instructions a block row's step with this, 109 without; 113 and 123
// a warp row's, sm_90). Not philox_mulhilo's form everywhere: the 64-bit register pairs cost
// other kernels registers (the unit-mode select 38 instead of 32).
TDROP_HD void philox_mulhilo_wide(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  uint64_t p;
  asm("mul.wide.u32 %0, %1, %2;" : "=l"(p) : "r"(a), "r"(b));
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#else
  philox_mulhilo(a, b, hi, lo);
#endif
}

// Philox4x32's multipliers and key increments (Weyl constants).
inline constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
inline constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

// One round under the round's keys; kWide: its products by philox_mulhilo_wide.
template <bool kWide = false>
TDROP_HD Philox4 philox_round(const Philox4& ctr, uint32_t key0, uint32_t key1) {
  uint32_t hi0, lo0, hi1, lo1;
  if constexpr (kWide) {
    philox_mulhilo_wide(kPhiloxM0, ctr.v[0], hi0, lo0);
    philox_mulhilo_wide(kPhiloxM1, ctr.v[2], hi1, lo1);
  } else {
    philox_mulhilo(kPhiloxM0, ctr.v[0], hi0, lo0);
    philox_mulhilo(kPhiloxM1, ctr.v[2], hi1, lo1);
  }
  return Philox4{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
}

// The round keys of a seed: key0 and key1 (its low and high words), then each round adds the Weyl
// constants. A kernel that draws many blocks under one seed takes them computed once on the host,
// in its parameters: they are read (from constant memory, or once into registers) where the key
// schedule would otherwise be added up in every thread for every block (20 adds per block of
// four numbers).
struct PhiloxKeys {
  uint32_t k0[10], k1[10];
};

TDROP_HD PhiloxKeys philox_keys(uint64_t seed) {
  PhiloxKeys keys{};
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    keys.k0[round] = key0;
    keys.k1[round] = key1;
    key0 += kPhiloxW0;
    key1 += kPhiloxW1;
  }
  return keys;
}

// The raw generator: 10 rounds over a 128-bit counter under the round keys of a seed.
TDROP_HD Philox4 philox4x32_10(Philox4 ctr, const PhiloxKeys& keys) {
  for (int round = 0; round < 10; ++round) ctr = philox_round(ctr, keys.k0[round], keys.k1[round]);
  return ctr;
}
// The same with the 64-bit key as two words (the compiler folds the schedule into the rounds).
TDROP_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t key0, uint32_t key1) {
  return philox4x32_10(ctr, philox_keys(key0 | static_cast<uint64_t>(key1) << 32));
}

// tdrop's stream convention: element `index` of stream `stream` under `seed` is lane index % 4
// of the block at counter (index / 4, stream). Each block of four numbers is one Philox call.
TDROP_HD Philox4 philox_counter(uint64_t stream, uint64_t block) {
  return Philox4{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                  static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}};
}
TDROP_HD Philox4 philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
  return philox4x32_10(philox_counter(stream, block), static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}
// The same block from philox_keys(seed).
TDROP_HD Philox4 philox_block(const PhiloxKeys& keys, uint64_t stream, uint64_t block) {
  return philox4x32_10(philox_counter(stream, block), keys);
}

// Round 0's half that depends on the stream alone (counter words 2 and 3 and round 0's keys),
// for a kernel that draws many blocks of one stream: computed once, it saves every block a
// multiply and two xors. philox_block(keys, philox_stream_head(keys, stream), block) gives the
// bits of philox_block(keys, stream, block).
struct PhiloxStreamHead {
  uint32_t a, b, c;
};
TDROP_HD PhiloxStreamHead philox_stream_head(const PhiloxKeys& keys, uint64_t stream) {
  uint32_t hi1, lo1;
  philox_mulhilo(kPhiloxM1, static_cast<uint32_t>(stream), hi1, lo1);
  return PhiloxStreamHead{hi1 ^ keys.k0[0], lo1, static_cast<uint32_t>(stream >> 32) ^ keys.k1[0]};
}
TDROP_HD Philox4 philox_block(const PhiloxKeys& keys, const PhiloxStreamHead& head,
                              uint64_t block) {
  uint32_t hi0, lo0;
  philox_mulhilo_wide(kPhiloxM0, static_cast<uint32_t>(block), hi0, lo0);
  Philox4 ctr{{head.a ^ static_cast<uint32_t>(block >> 32), head.b, hi0 ^ head.c, lo0}};
  TDROP_UNROLL
  for (int round = 1; round < 10; ++round)
    ctr = philox_round<true>(ctr, keys.k0[round], keys.k1[round]);
  return ctr;
}

TDROP_HD uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox_block(seed, stream, index >> 2).v[index & 3];
}

// A uniform float in [0, 1) with 24 random bits: exact in float32, identical on every device.
TDROP_HD float u32_to_uniform(uint32_t x) { return static_cast<float>(x >> 8) * 0x1p-24f; }

TDROP_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return u32_to_uniform(philox_u32(seed, stream, index));
}

// Bernoulli(p) decided in integers: true with probability floor(p * 2^24) / 2^24, for p in
// [0, 1] (exactly p for p = 0, p = 1 and every float in [2^-1, 1); below by less than 2^-24
// otherwise, so a p under 6e-8 never fires). Comparing the 24-bit draw against a 24-bit
// threshold avoids any float rounding difference between devices.
TDROP_HD uint32_t bernoulli_threshold(float p) {
  if (!(p > 0.0f)) return 0;
  if (p >= 1.0f) return 1u << 24;
  return static_cast<uint32_t>(p * 16777216.0f);  // the product is exact; the cast floors
}
TDROP_HD bool bernoulli_from_u32(uint32_t x, uint32_t threshold) { return (x >> 8) < threshold; }

// Named streams, so independent uses of one seed never share numbers.
enum PhiloxStream : uint64_t {
  kStreamInit = 1ull << 56,     // + parameter index
  kStreamShuffle = 2ull << 56,  // + epoch
  kStreamDropout = 3ull << 56,  // + step * 4096 + layer
  kStreamTargeted = 4ull << 56, // targeted dropout (see kernels/targeted_dropout)
  kStreamAugment = 5ull << 56,  // + epoch
};

// Host helpers for initialisation and shuffling.
class PhiloxHost {
 public:
  PhiloxHost(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}
  uint32_t next_u32() { return philox_u32(seed_, stream_, index_++); }
  float next_uniform() { return u32_to_uniform(next_u32()); }
  // Uniform integer in [0, n) without modulo bias (Lemire's multiply-shift with rejection).
  uint64_t next_below(uint64_t n) {
    if (n <= 1) return 0;
    const uint64_t limit = (0x100000000ull - n % 0x100000000ull) % n;  // rejection zone
    for (;;) {
      uint64_t x = next_u32();
      if (n > 0xFFFFFFFFull) x = (x << 32) | next_u32();
      if (n <= 0xFFFFFFFFull) {
        const uint64_t m = x * n;
        if ((m & 0xFFFFFFFFull) >= limit) return m >> 32;
      } else {
        return x % n;  // datasets never reach 2^32 rows; kept total for safety
      }
    }
  }
  // A normal draw (Box-Muller), for initialisers that need one.
  float next_normal();
  uint64_t position() const { return index_; }
  void set_position(uint64_t i) { index_ = i; }

 private:
  uint64_t seed_, stream_, index_ = 0;
};

}  // namespace tdrop
