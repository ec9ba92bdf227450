// A host stand-in for the part of aie_api that kernels/attention/attention.cc uses.
//
// A test instrument, not product code: `make -C kernels host-check` compiles the AIE path
// of attention.cc with the host g++ against this header, once per target
// (-D__AIE_ARCH__=20: AIE-ML, npu1; -D__AIE_ARCH__=21: XDNA 2 / AIE2P, npu2), runs it on
// every case the scalar path is tested on and compares the outputs byte for byte.
//
// It is written from aie_api's documentation and headers (Xilinx/aie_api, cited per item
// below), not copied from them. Two kinds of rule are enforced:
//   - at compile time (static_assert), what the real headers refuse to compile: vector
//     sizes other than 128/256/512/1024 bits (and multiples of 1024), accumulator lane
//     counts outside the documented tables, mmul shapes outside the documented table of
//     each architecture, linear_approx and parallel_lookup type combinations outside
//     their tables;
//   - at run time (abort with a message), what aie_api asserts or leaves undefined:
//     misaligned vector loads and stores, rounding modes this kernel does not use,
//     accumulator overflow, narrowing conversions out of range, lookup tables whose
//     copies disagree (the layout aie::lut documents), lookup indices that need the
//     floor rounding mode under another mode.
// Anything attention.cc does not use is deliberately absent, so new uses must be added
// here with their documented semantics before they can run on the host.

#pragma once

#if !defined(__AIE_ARCH__) || (__AIE_ARCH__ != 20 && __AIE_ARCH__ != 21)
#error "aie_api stand-in: define __AIE_ARCH__ as 20 (AIE-ML, npu1) or 21 (XDNA 2, npu2)"
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <limits>
#include <type_traits>

using int8 = int8_t;
using uint8 = uint8_t;
using int16 = int16_t;
using uint16 = uint16_t;
using int32 = int32_t;
using uint32 = uint32_t;

// Accumulator tags (aie_api: acc32, acc64 are global tag types).
struct acc32 {};
struct acc64 {};

namespace aie {

namespace standin {

[[noreturn]] inline void fail(const char *what) {
  fprintf(stderr, "aie_api stand-in (__AIE_ARCH__ %d): %s\n", __AIE_ARCH__, what);
  abort();
}

template <typename T>
inline constexpr bool is_elem = std::is_same_v<T, int8> || std::is_same_v<T, uint8> ||
                                std::is_same_v<T, int16> || std::is_same_v<T, uint16> ||
                                std::is_same_v<T, int32> || std::is_same_v<T, uint32>;

constexpr bool pow2(unsigned x) { return x != 0 && (x & (x - 1)) == 0; }

// aie_doc.hpp, "Supported vector types and native sizes": any combination that defines a
// 128b/256b/512b/1024b vector is native on AIE-ML and XDNA 2; larger vectors are kept as
// several native ones. detail/aie2/vector.hpp static_asserts `bits >= 128` and a power of
// two on insert and extract; XDNA 2 reuses that code (vector.hpp includes
// detail/aie2/vector.hpp for __AIE_ARCH__ 20 and 21).
template <typename T, unsigned N>
inline constexpr bool legal_vector = is_elem<T> && pow2(N * sizeof(T) * 8) &&
                                     N * sizeof(T) * 8 >= 128;

// detail/ld_st.hpp, vector_ldst_align: AIE-ML needs 16 bytes for a 128-bit vector and 32
// otherwise; XDNA 2 needs 16, 32 and 64 bytes for 128, 256 and >= 512 bits. The hardware
// truncates a misaligned address, so a misaligned access reads or writes other data;
// aie_api asserts the alignment (load_v, store_v).
constexpr unsigned ldst_align(unsigned bits) {
#if __AIE_ARCH__ == 20
  return bits == 128 ? 16 : 32;
#else
  return bits == 128 ? 16 : (bits == 256 ? 32 : 64);
#endif
}

// What ran on the vector units, per host thread: a test reads these to see that the
// exponent goes through the lookup units lane by lane, not through scalar code.
struct counters_t {
  uint64_t mmul_macs = 0;
  uint64_t linear_approx_lanes = 0;
  uint64_t parallel_lookup_lanes = 0;
};
inline thread_local counters_t counters;

// The tile's rounding and saturation state (aie::set_rounding, aie::set_saturation); the
// host runs heads on several threads, each with its own state, like separate cores.
inline thread_local unsigned rounding_state = 0;    // rounding_mode::floor
inline thread_local unsigned saturation_state = 0;  // saturation_mode::none

template <typename T>
constexpr __int128 lo() {
  return (__int128)std::numeric_limits<T>::min();
}
template <typename T>
constexpr __int128 hi() {
  return (__int128)std::numeric_limits<T>::max();
}

}  // namespace standin

// aie_types.hpp: rounding_mode and saturation_mode. The stand-in implements the modes
// attention.cc uses: floor ("always round towards negative infinity") and positive_inf
// ("round to nearest integer, with preference to positive infinity at half-way");
// saturation none ("allows values to overflow": two's-complement wrap) and saturate
// ("retain maximum/minimum value on positive/negative overflow").
enum class rounding_mode : unsigned { floor = 0, positive_inf = 2 };
enum class saturation_mode : unsigned { none = 0, saturate = 1 };

inline void set_rounding(rounding_mode m) {
  if (m != rounding_mode::floor && m != rounding_mode::positive_inf)
    standin::fail("rounding mode not implemented by the stand-in");
  standin::rounding_state = (unsigned)m;
}
inline rounding_mode get_rounding() { return (rounding_mode)standin::rounding_state; }
inline void set_saturation(saturation_mode m) { standin::saturation_state = (unsigned)m; }
inline saturation_mode get_saturation() { return (saturation_mode)standin::saturation_state; }

// aie.hpp: vector_decl_align, "the minimum alignment requirement for vector loads and
// stores" of any vector: the largest ldst alignment of the target.
static constexpr unsigned vector_decl_align = standin::ldst_align(1024);

namespace standin {

// Shift right by `shift` under rounding mode `rnd`, then saturate (`sat`) or wrap into T
// (accum::to_vector, aie.hpp: "the values can be shifted down before rounding and
// saturation are applied"). Callers read the tile state once per vector.
template <typename T>
inline T srs(int64_t v, int shift, unsigned rnd, unsigned sat) {
  if (shift > 0) {
    if (rnd == (unsigned)rounding_mode::positive_inf) {
      const int64_t half = (int64_t)1 << (shift - 1);
      v = v > INT64_MAX - half ? (int64_t)(((__int128)v + half) >> shift) : (v + half) >> shift;
    } else {
      v >>= shift;  // floor: arithmetic shift
    }
  } else if (shift < 0) {
    fail("to_vector with a negative shift (not used by attention.cc)");
  }
  if (v < (int64_t)std::numeric_limits<T>::min() || v > (int64_t)std::numeric_limits<T>::max()) {
    if (sat == (unsigned)saturation_mode::saturate)
      return v < 0 ? std::numeric_limits<T>::min() : std::numeric_limits<T>::max();
    return (T)(typename std::make_unsigned<T>::type)(uint64_t)v;  // wrap
  }
  return (T)v;
}

}  // namespace standin

template <typename T, unsigned N>
class vector {
  static_assert(standin::is_elem<T>, "aie::vector: element type not supported by the stand-in");
  static_assert(standin::legal_vector<T, N>,
                "aie::vector: not a 128/256/512/1024-bit (or larger power-of-two) vector; "
                "aie_api defines no such vector (aie_doc.hpp, supported vector sizes)");

 public:
  using value_type = T;
  T lane_[N];  // stand-in storage; kernels use the API, not this

  static constexpr unsigned size() { return N; }
  static constexpr unsigned bits() { return N * sizeof(T) * 8; }

  // detail/aie2/vector.hpp, extract: `static_assert(output_bits >= 128 && is_powerof2)`.
  template <unsigned M>
  vector<T, M> extract(unsigned idx) const {
    static_assert(M * sizeof(T) * 8 >= 128 && standin::pow2(M * sizeof(T) * 8) && M <= N,
                  "aie::vector::extract: sub-vectors narrower than 128 bits do not exist");
    if ((idx + 1) * M > N) standin::fail("extract index out of range");
    vector<T, M> r;
    for (unsigned i = 0; i < M; ++i) r.lane_[i] = lane_[idx * M + i];
    return r;
  }

  // detail/aie2/vector.hpp, insert_helper: `static_assert(input_bits >= 128 && is_powerof2)`.
  template <unsigned M>
  vector &insert(unsigned idx, const vector<T, M> &v) {
    static_assert(M * sizeof(T) * 8 >= 128 && standin::pow2(M * sizeof(T) * 8) && M <= N,
                  "aie::vector::insert: sub-vectors narrower than 128 bits do not exist");
    if ((idx + 1) * M > N) standin::fail("insert index out of range");
    for (unsigned i = 0; i < M; ++i) lane_[idx * M + i] = v.lane_[i];
    return *this;
  }

  // vector.hpp, pack(): "a conversion ... to the next smaller integer datatype, with the
  // same number of elements". Out-of-range values are not documented: the stand-in aborts.
  auto pack() const {
    using R = std::conditional_t<std::is_same_v<T, int32>, int16,
                                 std::conditional_t<std::is_same_v<T, int16>, int8, void>>;
    static_assert(!std::is_void_v<R>, "pack: only int32 -> int16 and int16 -> int8 here");
    vector<R, N> r;
    for (unsigned i = 0; i < N; ++i) {
      if (lane_[i] < std::numeric_limits<R>::min() || lane_[i] > std::numeric_limits<R>::max())
        standin::fail("vector::pack of a value out of the narrower type's range");
      r.lane_[i] = (R)lane_[i];
    }
    return r;
  }
};

// mask.hpp: mask<N>::from_uint32, bit i of the word is lane i.
template <unsigned N>
class mask {
  static_assert(N == 16 || N == 32, "aie::mask: the stand-in has 16- and 32-lane masks");

 public:
  bool bit_[N];
  static mask from_uint32(uint32_t w) {
    mask m;
    for (unsigned i = 0; i < N; ++i) m.bit_[i] = (w >> i) & 1u;
    return m;
  }
};

template <typename Tag, unsigned N>
class accum {
  static_assert(std::is_same_v<Tag, acc32> || std::is_same_v<Tag, acc64>,
                "aie::accum: only acc32 and acc64 in the stand-in");
  // aie_doc.hpp, "Supported accumulator types and native sizes", AIE-ML and XDNA 2:
  // acc32 8/16/32/64/128 lanes (32-bit accumulation), acc64 4/8/16/32/64 lanes (64-bit).
  static_assert(standin::pow2(N) &&
                    (std::is_same_v<Tag, acc32> ? (N >= 8 && N <= 128) : (N >= 4 && N <= 64)),
                "aie::accum: lane count not in aie_api's accumulator table");

 public:
  static constexpr int acc_bits = std::is_same_v<Tag, acc32> ? 32 : 64;
  int64_t lane_[N];

  static constexpr unsigned size() { return N; }

  // Store a lane, refusing values past the accumulator's native width (the hardware
  // would wrap; this kernel is written so that it never does).
  void set(unsigned i, __int128 v) {
    if constexpr (acc_bits == 32) {
      if (v < INT32_MIN || v > INT32_MAX) standin::fail("accumulator overflow (acc32)");
    } else {
      if (v < INT64_MIN || v > INT64_MAX) standin::fail("accumulator overflow (acc64)");
    }
    lane_[i] = (int64_t)v;
  }

  template <typename T>
  vector<T, N> to_vector(int shift = 0) const {
    const unsigned rnd = standin::rounding_state, sat = standin::saturation_state;
    if (rnd != (unsigned)rounding_mode::floor && rnd != (unsigned)rounding_mode::positive_inf)
      standin::fail("rounding mode not implemented by the stand-in");
    vector<T, N> r;
    for (unsigned i = 0; i < N; ++i) r.lane_[i] = standin::srs<T>(lane_[i], shift, rnd, sat);
    return r;
  }

  template <unsigned M>
  accum<Tag, M> extract(unsigned idx) const {
    accum<Tag, M> r;
    for (unsigned i = 0; i < M; ++i) r.lane_[i] = lane_[idx * M + i];
    return r;
  }
};

// ------------------------------------------------------------------ memory (aie.hpp)

template <unsigned N, typename T>
vector<std::remove_const_t<T>, N> load_v(const T *ptr) {
  using U = std::remove_const_t<T>;
  static_assert(standin::legal_vector<U, N>, "aie::load_v: no such vector");
  if ((uintptr_t)ptr % standin::ldst_align(N * sizeof(U) * 8))
    standin::fail("load_v: insufficient alignment (aie_api: vector_ldst_align)");
  vector<U, N> r;
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = ptr[i];
  return r;
}

template <typename T, unsigned N>
void store_v(T *ptr, const vector<T, N> &v) {
  if ((uintptr_t)ptr % standin::ldst_align(N * sizeof(T) * 8))
    standin::fail("store_v: insufficient alignment (aie_api: vector_ldst_align)");
  for (unsigned i = 0; i < N; ++i) ptr[i] = v.lane_[i];
}

// ------------------------------------------------------------- elementwise (aie.hpp)

template <typename T, unsigned N>
vector<T, N> broadcast(T x) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = x;
  return r;
}

template <typename T, unsigned N>
vector<T, N> zeros() {
  return broadcast<T, N>(T(0));
}

// add/sub wrap like the hardware's integer lanes; the stand-in refuses the wrap instead.
template <typename T, unsigned N>
vector<T, N> add(const vector<T, N> &a, const vector<T, N> &b) {
  vector<T, N> r;
  bool overflow = false;
  for (unsigned i = 0; i < N; ++i) overflow |= __builtin_add_overflow(a.lane_[i], b.lane_[i], &r.lane_[i]);
  if (overflow) standin::fail("add overflows its lane");
  return r;
}

template <typename T, unsigned N>
vector<T, N> sub(const vector<T, N> &a, const vector<T, N> &b) {
  vector<T, N> r;
  bool overflow = false;
  for (unsigned i = 0; i < N; ++i) overflow |= __builtin_sub_overflow(a.lane_[i], b.lane_[i], &r.lane_[i]);
  if (overflow) standin::fail("sub overflows its lane");
  return r;
}

template <typename T, unsigned N>
vector<T, N> max(const vector<T, N> &a, const vector<T, N> &b) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = a.lane_[i] > b.lane_[i] ? a.lane_[i] : b.lane_[i];
  return r;
}

// min(vector, value): aie.hpp, "minimum of the elements of a vector and a value".
template <typename T, unsigned N>
vector<T, N> min(const vector<T, N> &a, T b) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = a.lane_[i] < b ? a.lane_[i] : b;
  return r;
}

// select(v1, v2, m): aie.hpp, `out[i] = m[i] == 0 ? v1[i] : v2[i]`.
template <typename T, unsigned N>
vector<T, N> select(const vector<T, N> &v1, const vector<T, N> &v2, const mask<N> &m) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = m.bit_[i] ? v2.lane_[i] : v1.lane_[i];
  return r;
}

// downshift(v, shift): aie.hpp, "all values arithmetically downshifted".
template <typename T, unsigned N>
vector<T, N> downshift(const vector<T, N> &v, unsigned shift) {
  static_assert(std::is_signed_v<T>, "downshift: the stand-in covers signed lanes");
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = (T)(v.lane_[i] >> shift);
  return r;
}

// bit_and(a, v): aie.hpp, `out[i] = a & v[i]`.
template <typename T, unsigned N>
vector<T, N> bit_and(T a, const vector<T, N> &v) {
  vector<T, N> r;
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = (T)(a & v.lane_[i]);
  return r;
}

template <typename T, unsigned N>
T reduce_max(const vector<T, N> &v) {
  T r = v.lane_[0];
  for (unsigned i = 1; i < N; ++i) r = v.lane_[i] > r ? v.lane_[i] : r;
  return r;
}

template <typename T, unsigned N>
T reduce_add(const vector<T, N> &v) {
  int64_t s = 0;  // N <= 64 lanes of at most 32 bits
  for (unsigned i = 0; i < N; ++i) s += v.lane_[i];
  if (s < (int64_t)std::numeric_limits<T>::min() || s > (int64_t)std::numeric_limits<T>::max())
    standin::fail("reduce_add overflows");
  return (T)s;
}

// mul(a, b): aie.hpp, element-wise product into an accumulator whose default tag for
// 32b x 16b and 32b x 32b operands is acc64 (aie_doc.hpp, default accumulation table).
template <typename TA, typename TB, unsigned N>
accum<acc64, N> mul(const vector<TA, N> &a, const vector<TB, N> &b) {
  static_assert(std::is_same_v<TA, int32> && (std::is_same_v<TB, int16> || std::is_same_v<TB, int32>),
                "aie::mul: the stand-in covers int32 x int16 and int32 x int32");
  static_assert(N == 16, "aie::mul: 16 lanes of 32-bit products in the stand-in");
  accum<acc64, N> r;  // a 32 x 32-bit product always fits the 64-bit accumulator
  for (unsigned i = 0; i < N; ++i) r.lane_[i] = (int64_t)a.lane_[i] * b.lane_[i];
  return r;
}

// --------------------------------------------------------------------- mmul (mmul.hpp)

namespace standin {

// detail/mmul.hpp, "Matrix multiplication modes for real types": the shapes each
// architecture supports (native or emulated) for the operand types attention.cc uses.
template <unsigned M, unsigned K, unsigned N, typename TA, typename TB>
constexpr bool legal_mmul() {
  constexpr auto is = [](unsigned m, unsigned k, unsigned n) { return M == m && K == k && N == n; };
  if constexpr (std::is_same_v<TA, int8> && std::is_same_v<TB, int8>) {
#if __AIE_ARCH__ == 20
    return is(4, 8, 4) || is(4, 16, 4) || is(8, 8, 4) || is(2, 8, 8) || is(4, 8, 8) ||
           is(8, 8, 8) || is(1, 16, 8) || is(2, 16, 8) || is(4, 16, 8);
#else
    return is(4, 8, 8) || is(8, 8, 8);
#endif
  } else if constexpr (std::is_same_v<TA, int16> && std::is_same_v<TB, int8>) {
#if __AIE_ARCH__ == 20
    return is(4, 4, 4) || is(8, 4, 4) || is(4, 8, 4) || is(4, 4, 8) || is(8, 4, 8) || is(2, 8, 8);
#else
    return is(4, 4, 8) || is(8, 4, 8) || is(4, 8, 8) || is(2, 8, 8);
#endif
  } else {
    return false;
  }
}

}  // namespace standin

// aie.hpp, mmul: C = A x B with A an MxK matrix and B a KxN matrix, each given as one
// vector in row-major order (aie_doc.hpp: "pre-tiled ... MxK for A, KxN for B, and MxN
// for C"); mul starts the product, mac adds to it.
template <unsigned M, unsigned K, unsigned N, typename TA, typename TB, typename Tag = acc32>
struct mmul {
  static_assert(standin::legal_mmul<M, K, N, TA, TB>(),
                "aie::mmul: shape not in aie_api's table for this architecture and these types");
  static_assert(std::is_same_v<Tag, acc32>, "aie::mmul: the stand-in covers acc32 results");
  static constexpr unsigned size_A = M * K;
  static constexpr unsigned size_B = K * N;
  static constexpr unsigned size_C = M * N;

  accum<acc32, size_C> c_;

  void mul(const vector<TA, size_A> &a, const vector<TB, size_B> &b) { product(a, b, false); }
  void mac(const vector<TA, size_A> &a, const vector<TB, size_B> &b) { product(a, b, true); }

  template <typename T>
  vector<T, size_C> to_vector(int shift = 0) const {
    return c_.template to_vector<T>(shift);
  }

 private:
  void product(const vector<TA, size_A> &a, const vector<TB, size_B> &b, bool accumulate) {
    standin::counters.mmul_macs += M * K * N;
    // One block's dot products fit int32 (K <= 16 products of at most 16 x 8 bits). For
    // N == 8 (every shape attention.cc uses) a row of C is one 8 x int32 host vector, which
    // keeps the host-check fast; the arithmetic is the same plain sum.
    int32_t dot[size_C];
    if constexpr (N == 8) {
      typedef int32_t row8 __attribute__((vector_size(32)));
      typedef TB brow8 __attribute__((vector_size(8 * sizeof(TB))));
      row8 brow[K];
      for (unsigned k = 0; k < K; ++k) {
        brow8 raw;
        __builtin_memcpy(&raw, &b.lane_[k * N], sizeof(raw));
        brow[k] = __builtin_convertvector(raw, row8);
      }
      for (unsigned m = 0; m < M; ++m) {
        row8 acc = {};
        for (unsigned k = 0; k < K; ++k) acc += (int32_t)a.lane_[m * K + k] * brow[k];
        __builtin_memcpy(&dot[m * N], &acc, sizeof(acc));
      }
    } else {
      for (unsigned i = 0; i < size_C; ++i) dot[i] = 0;
      for (unsigned m = 0; m < M; ++m)
        for (unsigned k = 0; k < K; ++k) {
          const int32_t x = a.lane_[m * K + k];
          for (unsigned n = 0; n < N; ++n) dot[m * N + n] += x * (int32_t)b.lane_[k * N + n];
        }
    }
    for (unsigned i = 0; i < size_C; ++i) {
      const int64_t v = (accumulate ? c_.lane_[i] : 0) + (int64_t)dot[i];
      if (v < INT32_MIN || v > INT32_MAX) standin::fail("accumulator overflow (acc32)");
      c_.lane_[i] = v;
    }
  }
};

// ------------------------------------------------------------- lookup tables (aie.hpp)

// lut<4, Offset, Slope>(elems, LUT_ab, LUT_cd): four copies of the table for four parallel
// accesses, "two copies of the data, with the values repeated and interleaved at bank
// width granularity" in each of LUT_ab and LUT_cd (aie.hpp, lut constructor; the
// documented examples use 128-bit banks). A linear_approx entry is a (slope, offset)
// pair, slope first. Pointers must meet vector_decl_align.
template <unsigned Parallel, typename Offset, typename Slope = Offset>
struct lut {
  static_assert(Parallel == 4, "aie::lut: the stand-in covers four parallel accesses");
  using offset_type = Offset;
  unsigned elems_;
  const Offset *ab_;
  const Offset *cd_;

  lut(unsigned elems, const void *ab, const void *cd)
      : elems_(elems), ab_((const Offset *)ab), cd_((const Offset *)cd) {
    if ((uintptr_t)ab % vector_decl_align || (uintptr_t)cd % vector_decl_align)
      standin::fail("aie::lut tables must meet vector_decl_align");
  }

  // Word `w` of entry `i` of a table of `words`-word entries: its first copy in LUT_ab.
  Offset word(unsigned i, unsigned w, unsigned words) const {
    const unsigned per_bank = 16 / (sizeof(Offset) * words);
    return ab_[(i / per_bank) * 2 * per_bank * words + (i % per_bank) * words + w];
  }

  // All four copies of every entry agree: the table is in the layout aie::lut documents.
  void check_copies(unsigned words) const {
    const unsigned per_bank = 16 / (sizeof(Offset) * words);
    for (unsigned i = 0; i < elems_; ++i)
      for (unsigned w = 0; w < words; ++w) {
        const unsigned base = (i / per_bank) * 2 * per_bank * words + (i % per_bank) * words + w;
        const Offset v = ab_[base];
        if (ab_[base + per_bank * words] != v || cd_[base] != v || cd_[base + per_bank * words] != v)
          standin::fail("aie::lut copies disagree: the table is not in aie::lut's layout");
      }
  }
};

// parallel_lookup<T, lut<4, V>>: aie.hpp, "directly index a LUT based on input vector of
// values"; index = (input >> step_bits) + bias, out-of-range indices saturate (the default
// lut_oor_policy); step_bits needs the floor rounding mode or zero low bits.
template <typename T, typename Lut>
struct parallel_lookup {
  static_assert(std::is_same_v<T, int16> || std::is_same_v<T, int32>,
                "parallel_lookup: the stand-in covers int16 and int32 keys");
  static_assert(std::is_same_v<typename Lut::offset_type, int16>,
                "parallel_lookup: the stand-in covers int16 values");
  const Lut &lut_;
  unsigned step_bits_;
  int bias_;

  parallel_lookup(const Lut &l, unsigned step_bits = 0, unsigned bias = 0)
      : lut_(l), step_bits_(step_bits), bias_((int)bias) {
    l.check_copies(1);
  }

  template <unsigned N>
  vector<typename Lut::offset_type, N> fetch(const vector<T, N> &input) const {
    static_assert(N <= 32, "parallel_lookup::fetch: at most 32 lanes");
    standin::counters.parallel_lookup_lanes += N;
    vector<typename Lut::offset_type, N> r;
    for (unsigned i = 0; i < N; ++i) {
      const int64_t x = input.lane_[i];
      if (step_bits_ && (x & ((1 << step_bits_) - 1)) &&
          get_rounding() != rounding_mode::floor)
        standin::fail("parallel_lookup with step_bits needs floor rounding or zero low bits");
      int64_t idx = (x >> step_bits_) + bias_;
      idx = idx < 0 ? 0 : (idx >= (int64_t)lut_.elems_ ? lut_.elems_ - 1 : idx);
      r.lane_[i] = lut_.word((unsigned)idx, 0, 1);
    }
    return r;
  }
};

// linear_approx<int16, lut<4, int32, int32>>: aie.hpp, "index = (input >> step_bits) + bias;
// slope/offset pair read from LUT based on index; output = slope * (input & ((1 <<
// step_bits) - 1)) + (offset << shift_offset)", 16 lanes into acc64, step_bits >= 4 for
// int32 offsets (the table of supported linear approximations). The implementation
// (detail/aie2/linear_approx.hpp) clamps the index at the last entry and is independent of
// the rounding mode.
template <typename T, typename Lut>
struct linear_approx {
  static_assert(std::is_same_v<T, int16> && std::is_same_v<typename Lut::offset_type, int32>,
                "linear_approx: the stand-in covers int16 inputs with int32 slope/offset");
  const Lut &lut_;
  unsigned step_bits_;
  int bias_;
  int shift_offset_;

  linear_approx(const Lut &l, unsigned step_bits, int bias = 0, int shift_offset = 0)
      : lut_(l), step_bits_(step_bits), bias_(bias), shift_offset_(shift_offset) {
    if (step_bits < 4) standin::fail("linear_approx: int32 offsets need step_bits >= 4");
    l.check_copies(2);
  }

  template <unsigned N>
  accum<acc64, N> compute(const vector<T, N> &input) const {
    static_assert(N == 16, "linear_approx::compute: 16 lanes for int16 input");
    standin::counters.linear_approx_lanes += N;
    accum<acc64, N> r;
    for (unsigned i = 0; i < N; ++i) {
      const int32 x = input.lane_[i];
      if (x < 0) standin::fail("linear_approx: negative inputs are not covered by the stand-in");
      int64_t idx = (int64_t)(x >> step_bits_) + bias_;
      idx = idx >= (int64_t)lut_.elems_ ? lut_.elems_ - 1 : idx;
      const uint32 rem = (uint16)x & ((1u << step_bits_) - 1);
      const int64_t slope = lut_.word((unsigned)idx, 0, 2);
      const int64_t offset = lut_.word((unsigned)idx, 1, 2);
      if (shift_offset_ < 0 || shift_offset_ > 24) standin::fail("linear_approx: shift_offset");
      r.lane_[i] = slope * rem + offset * ((int64_t)1 << shift_offset_);  // < 2^63
    }
    return r;
  }
};

}  // namespace aie
