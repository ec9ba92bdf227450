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
//
// Every aie_api name attention.cc uses, with the place in Xilinx/aie_api (include/aie_api/,
// checked at commit dc3ab77c, 2025-03) whose signature the stand-in follows: constness,
// template parameters, the types it accepts. tests/test_kernel_build.py fails if
// attention.cc uses an aie:: name (or a member of an aie_api object) that is not in this
// table. Format: `//   MODEL name  file:line  note`.
//   MODEL vector           vector.hpp:72           vector<T, Elems>; 128..1024-bit only
//   MODEL accum            accum.hpp:46-47         accum<Tag, Elems>; acc32, acc64 lanes
//   MODEL mask             mask.hpp:17             mask<Elems>
//   MODEL from_uint32      mask.hpp:157            static, bit i is lane i
//   MODEL extract          vector.hpp:422          const, >= 128-bit results
//   MODEL insert           vector.hpp:363          returns vector&, >= 128-bit inputs
//   MODEL pack             vector.hpp:511          const, next narrower integer type
//   MODEL to_vector        accum.hpp:392, aie.hpp:5995 (mmul)   const, shift = 0
//   MODEL load_v           aie.hpp:583             load_v<Elems>(const T*), aligned
//   MODEL store_v          aie.hpp:740             store_v(T*, vector), aligned
//   MODEL broadcast        aie.hpp:1111            broadcast<T, Elems>(a)
//   MODEL zeros            aie.hpp:1136            zeros<T, Elems>()
//   MODEL add              aie.hpp:3581            vector + vector
//   MODEL sub              aie.hpp:4250            vector - vector
//   MODEL max              aie.hpp:1975            vector, vector
//   MODEL min              aie.hpp:2191            min(vector, value)
//   MODEL lt               aie.hpp:1393            lt(vector, value) -> mask
//   MODEL ge               aie.hpp:1555            ge(vector, value) -> mask
//   MODEL select           aie.hpp:1851            select(v1, v2, mask): mask ? v2 : v1
//   MODEL downshift        aie.hpp:4037            arithmetic shift by an unsigned amount
//   MODEL bit_and          aie.hpp:3398            bit_and(value, vector)
//   MODEL reduce_max       aie.hpp:2111
//   MODEL reduce_add       aie.hpp:4189
//   MODEL mul              aie.hpp:4762            default accumulator (acc64 for 32b x 16/32b)
//   MODEL mmul             aie.hpp:5859, detail/mmul.hpp:22-96   shapes per architecture
//   MODEL size_A           aie.hpp:5859-5900       mmul::size_A/size_B/size_C
//   MODEL size_B           aie.hpp:5859-5900
//   MODEL size_C           aie.hpp:5859-5900
//   MODEL mac              aie.hpp:6039            non-const
//   MODEL lut              aie.hpp:6283, detail/lut.hpp:20-33   lut<4, Offset, Slope = Offset>
//   MODEL linear_approx    aie.hpp:6425, detail/aie2/linear_approx.hpp:192-331
//   MODEL compute          aie.hpp:6448            NOT const (writes a scratch ring)
//   MODEL parallel_lookup  aie.hpp:6477, detail/aie2/parallel_lookup.hpp:60-239
//   MODEL fetch            aie.hpp:6520            NOT const; fetch<Vec, N = Vec::size()>
//   MODEL lut_oor_policy   aie.hpp:6232, detail/lut.hpp:12-15
//   MODEL set_rounding     aie.hpp:7811
//   MODEL set_saturation   aie.hpp:7776
//   MODEL rounding_mode    aie_types.hpp:36        floor, positive_inf modeled
//   MODEL saturation_mode  aie_types.hpp:29        none, saturate modeled
//   MODEL vector_decl_align  detail/ld_st.hpp:15
// Architecture-specific behaviour: vector load/store alignment (detail/ld_st.hpp), mmul
// shapes (detail/mmul.hpp:22-96, AIE-ML and XDNA 2 rows), the lookup tables' bank width
// (128-bit on AIE-ML, 256-bit on XDNA 2: mlir-aie aie_runtime_lib/AIE2/lut_based_ops.cpp:17-21,
// AIE2P/lut_based_ops.cpp:16-20).
// What a host build cannot model: program memory (16 KiB), stack use, which intrinsics
// Peano lowers, bank placement of the tables (layout.memory_map models it), timing.

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

// lt(v, a), ge(v, a): aie.hpp:1393 and :1555, a lane mask of the comparison with a value.
template <typename T, unsigned N>
mask<N> lt(const vector<T, N> &v, T a) {
  mask<N> m;
  for (unsigned i = 0; i < N; ++i) m.bit_[i] = v.lane_[i] < a;
  return m;
}

template <typename T, unsigned N>
mask<N> ge(const vector<T, N> &v, T a) {
  mask<N> m;
  for (unsigned i = 0; i < N; ++i) m.bit_[i] = v.lane_[i] >= a;
  return m;
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

namespace standin {

// The bank width at which aie::lut's copies repeat: AIE-ML keeps the two copies of each
// table 128 bits apart, XDNA 2 256 bits apart (mlir-aie aie_runtime_lib/AIE2/
// lut_based_ops.cpp:17-21 "each table has a copy of data separated by 128-bit";
// aie_runtime_lib/AIE2P/lut_based_ops.cpp:16-20 "... separated by 256-bit"). aie.hpp:6264-
// 6275 documents the layout ("repetition every bank width") with a 128-bit example.
constexpr unsigned lut_bank_bytes = __AIE_ARCH__ == 20 ? 16 : 32;

}  // namespace standin

// aie.hpp:6232, detail/lut.hpp:12-15: what parallel_lookup does with an index outside the
// table; saturate is the default (aie.hpp:6475).
enum class lut_oor_policy { saturate, truncate };

// lut<ParallelAccesses, OffsetType, SlopeType = OffsetType> (aie.hpp:6281-6327,
// detail/lut.hpp:17-33): the 4-access constructor takes (elems, LUT_ab, LUT_cd), two
// tables "with the values repeated and interleaved at bank width granularity", which must
// meet vector_decl_align and sit "in different memory banks" (aie.hpp:6268). The stand-in
// models 4 parallel accesses only (the 1- and 2-access forms exist upstream but this
// kernel does not use them). It cannot see memory banks on the host: the design's memory
// map puts the two tables in different banks (layout.memory_map, tested).
template <unsigned ParallelAccesses, typename OffsetType, typename SlopeType = OffsetType>
struct lut {
  static_assert(ParallelAccesses == 1 || ParallelAccesses == 2 || ParallelAccesses == 4,
                "aie::lut: aie_api has 1, 2 and 4 parallel accesses");
  static_assert(ParallelAccesses == 4, "aie::lut: the stand-in models four parallel accesses");
  using offset_type = OffsetType;
  using slope_type = SlopeType;
  unsigned elems_;
  const OffsetType *ab_;
  const OffsetType *cd_;

  lut(unsigned LUT_elems, const void *LUT_ab, const void *LUT_cd)
      : elems_(LUT_elems), ab_((const OffsetType *)LUT_ab), cd_((const OffsetType *)LUT_cd) {
    if ((uintptr_t)LUT_ab % vector_decl_align || (uintptr_t)LUT_cd % vector_decl_align)
      standin::fail("aie::lut tables must meet vector_decl_align");
  }

  // Position of word `w` of entry `i` (entries of `words` words) in one table: entries
  // fill a bank width, then the same bank width again (the second copy), then the next.
  static unsigned at(unsigned i, unsigned w, unsigned words) {
    const unsigned per_bank = standin::lut_bank_bytes / (sizeof(OffsetType) * words);
    return (i / per_bank) * 2 * per_bank * words + (i % per_bank) * words + w;
  }

  // The word the hardware's gather returns for entry `i`: each of the four parallel
  // reads takes one copy; they agree only when the table is in this architecture's
  // layout, and the stand-in refuses a table whose copies disagree.
  OffsetType word(unsigned i, unsigned w, unsigned words) const {
    const unsigned base = at(i, w, words);
    const unsigned second = base + standin::lut_bank_bytes / sizeof(OffsetType);
    const OffsetType v = ab_[base];
    if (ab_[second] != v || cd_[base] != v || cd_[second] != v)
      standin::fail("aie::lut copies disagree: the table is not in this architecture's "
                    "aie::lut layout (bank width)");
    return v;
  }

  void check_copies(unsigned words) const {
    for (unsigned i = 0; i < elems_; ++i)
      for (unsigned w = 0; w < words; ++w) (void)word(i, w, words);
  }
};

// parallel_lookup<T, MyLUT, oor_policy = saturate> (aie.hpp:6475-6548): "directly index a
// LUT based on input vector of values"; index = (input >> step_bits) + bias; signed T has
// the (l, step_bits = 0, bias = 0) constructor (aie.hpp:6490-6493). The AIE-ML/XDNA 2
// implementation exists only for lut<4, V, V> (detail/aie2/parallel_lookup.hpp:60-61) and
// `fetch` is not const (aie.hpp:6518-6523; detail/aie2/parallel_lookup.hpp:158-161 requires
// Vec::size() <= 32 and N <= the value type's native length). The index is computed by an
// accumulator shift (detail/aie2/parallel_lookup.hpp:189-191, "not currently rounding mode
// agnostic"): step_bits needs floor rounding or zero low bits (aie.hpp:6484-6488). The
// stand-in models signed keys, int16 values and the saturate policy.
template <typename T, typename MyLUT, lut_oor_policy oor_policy = lut_oor_policy::saturate>
struct parallel_lookup {
  static_assert(std::is_same_v<typename MyLUT::offset_type, typename MyLUT::slope_type>,
                "parallel_lookup: aie_api implements lut<4, V, V> only");
  static_assert(std::is_same_v<T, int16> || std::is_same_v<T, int32>,
                "parallel_lookup: the stand-in models int16 and int32 keys");
  static_assert(std::is_same_v<typename MyLUT::offset_type, int16>,
                "parallel_lookup: the stand-in models int16 values");
  static_assert(oor_policy == lut_oor_policy::saturate,
                "parallel_lookup: the stand-in models the saturate policy");
  unsigned elems_;
  MyLUT lut_;  // aie_api keeps the table pointers (detail/aie2/parallel_lookup.hpp:228-233)
  unsigned step_bits_;
  int bias_;

  parallel_lookup(const MyLUT &l, unsigned step_bits = 0, unsigned bias = 0)
      : elems_(l.elems_), lut_(l), step_bits_(step_bits), bias_((int)bias) {
    l.check_copies(1);
  }

  template <typename Vec, unsigned N = Vec::size()>
  vector<typename MyLUT::offset_type, N> fetch(const Vec &input) {
    static_assert(std::is_same_v<typename Vec::value_type, T>,
                  "parallel_lookup::fetch: input elements must be the key type T");
    static_assert(Vec::size() <= 32 && N <= Vec::size() && N <= 32,
                  "parallel_lookup::fetch: at most 32 lanes (detail/aie2/parallel_lookup.hpp)");
    standin::counters.parallel_lookup_lanes += N;
    vector<typename MyLUT::offset_type, N> r;
    for (unsigned i = 0; i < N; ++i) {
      const int64_t x = input.lane_[i];
      if (step_bits_ && (x & ((1 << step_bits_) - 1)) && get_rounding() != rounding_mode::floor)
        standin::fail("parallel_lookup with step_bits needs floor rounding or zero low bits");
      int64_t idx = (x >> step_bits_) + bias_;
      idx = idx < 0 ? 0 : (idx >= (int64_t)elems_ ? elems_ - 1 : idx);
      r.lane_[i] = lut_.word((unsigned)idx, 0, 1);
    }
    return r;
  }
};

// linear_approx<T, MyLUT> (aie.hpp:6423-6455): "index = (input >> step_bits) + bias;
// slope/offset pair read from LUT based on index; output = slope * (input & ((1 <<
// step_bits) - 1)) + (offset << shift_offset)"; the table of supported types
// (aie.hpp:6395-6401) gives int16 input with int32 offset and slope 16 lanes into acc64,
// step_bits >= 4. `compute` is not const: it writes a scratch ring through pointers the
// object owns (aie.hpp:6446-6450; detail/aie2/linear_approx.hpp:244-246, 258-259 and
// 321-330). The implementation for int16 input grows the input to 16 lanes
// (detail/aie2/linear_approx.hpp:249), clamps the index at the last entry (:270) and
// zeroes the remainder before the index shift, so it is independent of the rounding mode
// (:260-261). The stand-in models int16 input with int32 slope and offset.
template <typename T, typename MyLUT>
struct linear_approx {
  static_assert(std::is_same_v<T, int16> || std::is_same_v<T, int8>,
                "linear_approx: aie_api supports int8, int16 and bfloat16 inputs");
  static_assert(std::is_same_v<T, int16> && std::is_same_v<typename MyLUT::offset_type, int32> &&
                    std::is_same_v<typename MyLUT::slope_type, int32>,
                "linear_approx: the stand-in models int16 input with lut<4, int32, int32>");
  MyLUT lut_;  // aie_api copies the table pointers (detail/aie2/linear_approx.hpp:207-208)
  unsigned step_bits_;
  int bias_;
  int shift_offset_;
  unsigned scratch_writes_ = 0;  // the scratch ring compute() writes (why it is not const)

  linear_approx(const MyLUT &l, unsigned step_bits, int bias = 0, int shift_offset = 0)
      : lut_(l), step_bits_(step_bits), bias_(bias), shift_offset_(shift_offset) {
    if (step_bits < 4) standin::fail("linear_approx: int32 offsets need step_bits >= 4");
    l.check_copies(2);
  }

  template <typename Vec>
  accum<acc64, Vec::size()> compute(const Vec &input) {
    static_assert(std::is_same_v<typename Vec::value_type, T>,
                  "linear_approx::compute: input elements must be T");
    static_assert(Vec::size() <= 16, "linear_approx::compute: 16 lanes for int16 input");
    constexpr unsigned N = Vec::size();
    standin::counters.linear_approx_lanes += N;
    ++scratch_writes_;
    accum<acc64, N> r;
    for (unsigned i = 0; i < N; ++i) {
      const int32 x = input.lane_[i];
      if (x < 0) standin::fail("linear_approx: negative inputs are not modeled by the stand-in");
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
