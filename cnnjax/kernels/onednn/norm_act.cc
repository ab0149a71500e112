// The passes of training-mode batch normalisation fused with a residual add and an activation
// (cnnjax.kernels.batch_norm_act) on the CPU, as one XLA FFI handler, float32 or bfloat16
// activations viewed as (M rows, C channels), channels contiguous (NHWC flattened):
//
//   pass 0 statistics   (x) -> (mean, var)                        per channel, float32
//   pass 1 normalise    (x, ab, [res]) -> y                        y = act(a x + b + res)
//   pass 2 sums         (x, ab, mr, g, [res]) -> (s1, s2, [dz])    dz = g act'(z), s1 = sum dz,
//                                                                  s2 = sum dz (x - mean) rstd
//   pass 3 input grad   (x, d, coef) -> dx                         dx = A dz + B x + D, dz = d
//                                                                  (residual) or d act'(a x + b)
//   pass 4 tangent      (x, t, coef, [res, tres]) -> ty            ty = act'(z) (A t + B x + D
//                                                                  + tres), z = a x + b + res
//
// ab (2, C) holds a, b; mr (2, C) mean, rstd; coef (5, C) A, B, D, a, b; all float32. These are
// the Pallas kernels' passes (batch_norm_act.py says what each computes and why), so the
// Python side is the same for both backends.
//
// Why hand-written: oneDNN's batch normalisation fuses ReLU only (no GELU, swish, hard swish),
// its d scale loses digits on channels whose mean is far from zero (it sums x unshifted in
// float32), and XLA's CPU fusions of these passes measured 2-3x slower than the memory traffic
// needs (experiments/results/cpu_step.md). Every pass is one sweep over the rows with the
// channel loop vectorised (GCC, -O3; the activations are branch-free so the loop has no calls:
// exp and erf are evaluated by the polynomials below, accurate to a few float32 ulps).
//
// Reductions accumulate in double per block of rows, the rows split into at most kBlocks
// blocks by M alone, and the blocks' partials are merged in block order: the result is the
// same bit for bit whatever the number of threads. Statistics use shifted sums (the block's
// first row as shift) merged with Chan et al.'s formula, so a channel whose mean is far from
// zero keeps every digit of its variance.
//
// Threads: an OpenMP team of the loader's size (CnnjaxOnednnSetThreads in conv.cc), started
// from the calling XLA thread, as for the convolutions; small calls run on the calling thread.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "cpu_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace cnnjax_cpu;

enum Activation { kIdentity, kRelu, kRelu6, kSwish, kHardSwish, kGelu, kActivations };
enum Pass { kStats, kNormalize, kSums, kInputGrad, kTangent, kPasses };

constexpr int64_t kBlocks = 64;  // the most blocks a reduction splits its rows into

// exp(x) for float32 x: x = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor polynomial to degree
// 7 (truncation below 6e-9 relative), times 2^k built in the exponent bits. x is clamped to
// [-87.3, 88.3] so that 2^k stays a normal number: below e^-87.3 the result is ~1e-38 rather
// than a denormal or 0, which no caller here can tell from 0 (Phi sets its own zero).
CNNJAX_INLINE float Exp(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  // k = x / ln2 rounded to the nearest integer by adding 1.5 * 2^23 (its float then holds k in
  // the low mantissa bits); std::floor would stop GCC from vectorising the loop.
  const float shifted = std::fma(x, 1.44269504f, 12582912.0f);
  const float k = shifted - 12582912.0f;
  float r = std::fma(k, -0.693145752f, x);  // ln2 in two parts, so k ln2 is exact enough
  r = std::fma(k, -1.42860677e-06f, r);
  float p = 1.0f / 5040;
  p = std::fma(p, r, 1.0f / 720);
  p = std::fma(p, r, 1.0f / 120);
  p = std::fma(p, r, 1.0f / 24);
  p = std::fma(p, r, 1.0f / 6);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const int32_t bits = (__builtin_bit_cast(int32_t, shifted) - 0x4B400000 + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

CNNJAX_INLINE float Sigmoid(float z) { return 1.0f / (1.0f + Exp(-z)); }

// The standard normal CDF Phi(z) and density phi(z) (for the exact GELU, z Phi(z)), with
// u = |z| / sqrt(2) and E = exp(-u^2) = sqrt(2 pi) phi(z):
// - u < 1: erf(u) = u P(u^2), P the Taylor series of erf(u) / u to u^20 (truncation < 2e-9);
// - u >= 1: erfc(u) = E Q(s) / u, Q(s) ~ u e^(u^2) erfc(u) in s = (2 / u - 1.1) / 0.9 over
//   u in [1, 10] (s in [-1, 1]): a degree-12 least-squares Chebyshev fit in float64 (relative
//   error 2e-9; 8e-8 once evaluated in float32), coefficients in the power basis of s;
//   beyond u = 10 erfc is below float32's smallest normal.
// Phi = (1 + erf(z / sqrt 2)) / 2 = 1 - erfc(u) / 2 for z > 0, erfc(u) / 2 for z < 0.
constexpr float kErfSeries[11] = {
    1.128379167e+00f, -3.761263890e-01f, 1.128379167e-01f, -2.686617065e-02f, 5.223977625e-03f,
    -8.548327023e-04f, 1.205533298e-04f, -1.492565036e-05f, 1.646211437e-06f, -1.636584469e-07f,
    1.480719282e-08f};
constexpr float kErfcFit[13] = {
    5.023534233e-01f, -7.651580730e-02f, -4.123688264e-03f, 8.962924200e-03f, -3.978206620e-03f,
    9.196535677e-04f, 9.776484288e-05f, -2.253707871e-04f, 1.435517453e-04f, -7.294686697e-05f,
    1.410331645e-05f, 1.837082404e-05f, -1.019662100e-05f};

struct Normal {
  float cdf, density;
};

// p(v) = c[0] + c[1] v + ... + c[N-1] v^(N-1), unrolled at compile time (a loop here would be an
// inner loop the vectoriser refuses).
template <size_t N>
CNNJAX_INLINE float Horner(const float (&c)[N], float v) {
  float p = c[N - 1];
  [&]<size_t... I>(std::index_sequence<I...>) {
    ((p = std::fma(p, v, c[N - 2 - I])), ...);
  }(std::make_index_sequence<N - 1>{});
  return p;
}

CNNJAX_INLINE Normal Phi(float z) {
  const float u = std::fabs(z) * 0.707106781f;
  // u^2 = z^2 / 2 with z^2's rounding error carried (fma), so that E keeps its relative
  // accuracy in the far tail (z = -12: u^2 = 72, whose rounding alone would cost 4e-6); |z| is
  // capped first so z^2 cannot overflow, and E is 0 where exp(-z^2 / 2) is below float32's
  // smallest normal (|z| > 13.2).
  const float za = std::min(std::fabs(z), 13.2f);
  const float zz = za * za, zz_error = std::fma(za, za, -zz);
  const float e = std::fabs(z) < 13.2f ? Exp(-0.5f * zz) * (1.0f - 0.5f * zz_error) : 0.0f;
  const float v = u * u;
  const float erf_small = u * Horner(kErfSeries, v);
  const float uc = std::max(u, 1.0f);
  const float s = (2.0f / std::min(uc, 10.0f) - 1.1f) * (1.0f / 0.9f);
  const float erfc_large = e * Horner(kErfcFit, s) / uc;
  const float half_erfc = 0.5f * (u < 1.0f ? 1.0f - erf_small : erfc_large);
  return {z > 0.0f ? 1.0f - half_erfc : half_erfc, e * 0.398942280f};
}

// Each activation and its derivative, of the float32 pre-activation z; the same functions as
// cnnjax.kernels.activations (the derivative at a kink is the one-sided value those use).
template <int A>
CNNJAX_INLINE float Act(float z) {
  if constexpr (A == kIdentity) return z;
  if constexpr (A == kRelu) return z < 0.0f ? 0.0f : z;  // a NaN stays NaN
  if constexpr (A == kRelu6) return std::min(std::max(z, 0.0f), 6.0f);
  if constexpr (A == kSwish) return z * Sigmoid(z);
  if constexpr (A == kHardSwish) return z * std::min(std::max(z + 3.0f, 0.0f), 6.0f) * (1.0f / 6);
  if constexpr (A == kGelu) {
    return z * Phi(z).cdf;
  }
}

template <int A>
CNNJAX_INLINE float ActGrad(float z) {
  if constexpr (A == kIdentity) return 1.0f;
  if constexpr (A == kRelu) return z > 0.0f ? 1.0f : 0.0f;
  if constexpr (A == kRelu6) return (z > 0.0f && z < 6.0f) ? 1.0f : 0.0f;
  if constexpr (A == kSwish) {
    const float s = Sigmoid(z);
    return s * (1.0f + z * (1.0f - s));
  }
  if constexpr (A == kHardSwish) {
    return z < -3.0f ? 0.0f : (z > 3.0f ? 1.0f : (2.0f * z + 3.0f) * (1.0f / 6));
  }
  if constexpr (A == kGelu) {
    const Normal n = Phi(z);
    return n.cdf + (n.density > 0.0f ? z * n.density : 0.0f);  // gelu'(+-inf): 1, 0 (no inf * 0)
  }
}

// One call's operands: (M, C) arrays of type T (null where absent) and (k, C) float32 tables.
template <typename T>
struct Operands {
  int64_t m, c;
  const T *x, *g, *res, *tres;  // g: the pass's second (M, C) input (g, d or t)
  const float* table;           // ab, coef
  const float* mr;              // sums: mean, rstd
  T* out;                       // y, dz, dx or ty
};

// Runs body(part, row_begin, row_end) over the rows, split into `parts` contiguous ranges.
template <typename Body>
void ParallelRows(int64_t m, int64_t c, int64_t parts, const Body& body) {
  ParallelParts(parts, m * c, [&](int64_t p, int) { body(p, m * p / parts, m * (p + 1) / parts); });
}

int64_t Blocks(int64_t m) { return std::max<int64_t>(1, std::min(m, kBlocks)); }

// Statistics: per block, n, the shift K (its first row) and the shifted sums; merged in order.
template <typename T>
void Statistics(const Operands<T>& op, float* mean_out, float* var_out) {
  const int64_t m = op.m, c = op.c, blocks = Blocks(m);
  // Per block: mean, M2 (the results), and its shifted sums and shift (scratch); allocated
  // here, outside the threads, so that an allocation failure is an error, not an abort.
  std::vector<double> part(size_t(blocks) * 5 * c, 0.0);
  ParallelRows(m, c, blocks, [&](int64_t blk, int64_t r0, int64_t r1) {
    double* mean = part.data() + blk * 5 * c;
    double *m2 = mean + c, *s1 = mean + 2 * c, *s2 = mean + 3 * c, *shift = mean + 4 * c;
    const T* first = op.x + r0 * c;
    for (int64_t j = 0; j < c; ++j) shift[j] = ToFloat(first[j]);
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = op.x + r * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        const double d = double(ToFloat(x[j])) - shift[j];
        s1[j] += d;
        s2[j] += d * d;
      }
    }
    const double n = double(r1 - r0);
    for (int64_t j = 0; j < c; ++j) {
      mean[j] = shift[j] + s1[j] / n;
      m2[j] = std::max(s2[j] - s1[j] * s1[j] / n, 0.0);
    }
  });
  for (int64_t j = 0; j < c; ++j) {
    double n = 0, mu = 0, m2 = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const double nb = double(m * (b + 1) / blocks - m * b / blocks);
      const double mb = part[(b * 5) * c + j], m2b = part[(b * 5 + 1) * c + j];
      const double total = n + nb, delta = mb - mu;
      mu += delta * nb / total;
      m2 += m2b + delta * delta * n * nb / total;
      n = total;
    }
    mean_out[j] = float(mu);
    var_out[j] = float(m2 / n);
  }
}

// The row loops: one row of C channels each, the residual's presence a template argument so
// that the loop body has no branch and vectorises.
template <typename T, int A, bool R>
inline void NormalizeRow(const T* __restrict x, const T* __restrict res, const float* __restrict a,
                         const float* __restrict b, T* __restrict y, int64_t c) {
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    float z = ToFloat(x[j]) * a[j] + b[j];
    if constexpr (R) z += ToFloat(res[j]);
    Store(y + j, Act<A>(z));
  }
}

template <typename T, int A, bool R>
inline void SumsRow(const T* __restrict x, const T* __restrict g, const T* __restrict res,
                    const float* __restrict a, const float* __restrict b,
                    const float* __restrict mean, const float* __restrict rstd,
                    T* __restrict dz_out, double* __restrict s1, double* __restrict s2, int64_t c) {
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const float xv = ToFloat(x[j]);
    float z = xv * a[j] + b[j];
    if constexpr (R) z += ToFloat(res[j]);
    const float dz = ToFloat(g[j]) * ActGrad<A>(z);
    if constexpr (R) Store(dz_out + j, dz);
    s1[j] += double(dz);
    s2[j] += double(dz * ((xv - mean[j]) * rstd[j]));
  }
}

template <typename T, int A, bool R>
inline void InputGradRow(const T* __restrict x, const T* __restrict d, const float* __restrict coef,
                         T* __restrict dx, int64_t c) {
  const float *ca = coef, *cb = coef + c, *cd = coef + 2 * c, *a = coef + 3 * c, *b = coef + 4 * c;
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const float xv = ToFloat(x[j]);
    float dz = ToFloat(d[j]);
    if constexpr (!R) dz *= ActGrad<A>(xv * a[j] + b[j]);
    Store(dx + j, ca[j] * dz + cb[j] * xv + cd[j]);
  }
}

template <typename T, int A, bool R>
inline void TangentRow(const T* __restrict x, const T* __restrict t, const T* __restrict res,
                       const T* __restrict tres, const float* __restrict coef, T* __restrict ty,
                       int64_t c) {
  const float *ca = coef, *cb = coef + c, *cd = coef + 2 * c, *a = coef + 3 * c, *b = coef + 4 * c;
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) {
    const float xv = ToFloat(x[j]);
    float z = xv * a[j] + b[j];
    float tz = ca[j] * ToFloat(t[j]) + cb[j] * xv + cd[j];
    if constexpr (R) {
      z += ToFloat(res[j]);
      tz += ToFloat(tres[j]);
    }
    Store(ty + j, ActGrad<A>(z) * tz);
  }
}

template <typename T>
const T* RowOf(const T* base, int64_t r, int64_t c) {
  return base ? base + r * c : nullptr;
}

template <typename T, int A, bool R>
void Normalize(const Operands<T>& op) {
  const int64_t c = op.c;
  ParallelRows(op.m, c, Team(), [&](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      NormalizeRow<T, A, R>(op.x + r * c, RowOf(op.res, r, c), op.table, op.table + c,
                            op.out + r * c, c);
    }
  });
}

// Sums of dz and dz * xhat per block (double), then over the blocks in order; with a residual
// also writes dz (the residual's gradient).
template <typename T, int A, bool R>
void Sums(const Operands<T>& op, float* s1_out, float* s2_out) {
  const int64_t m = op.m, c = op.c, blocks = Blocks(m);
  std::vector<double> part(size_t(blocks) * 2 * c, 0.0);
  ParallelRows(m, c, blocks, [&](int64_t blk, int64_t r0, int64_t r1) {
    double* s1 = part.data() + blk * 2 * c;
    for (int64_t r = r0; r < r1; ++r) {
      SumsRow<T, A, R>(op.x + r * c, op.g + r * c, RowOf(op.res, r, c), op.table, op.table + c,
                       op.mr, op.mr + c, R ? op.out + r * c : nullptr, s1, s1 + c, c);
    }
  });
  for (int64_t j = 0; j < c; ++j) {
    double t1 = 0, t2 = 0;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      t1 += part[(blk * 2) * c + j];
      t2 += part[(blk * 2 + 1) * c + j];
    }
    s1_out[j] = float(t1);
    s2_out[j] = float(t2);
  }
}

template <typename T, int A, bool R>
void InputGrad(const Operands<T>& op) {
  const int64_t c = op.c;
  ParallelRows(op.m, c, Team(), [&](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      InputGradRow<T, A, R>(op.x + r * c, op.g + r * c, op.table, op.out + r * c, c);
    }
  });
}

template <typename T, int A, bool R>
void Tangent(const Operands<T>& op) {
  const int64_t c = op.c;
  ParallelRows(op.m, c, Team(), [&](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      TangentRow<T, A, R>(op.x + r * c, op.g + r * c, RowOf(op.res, r, c), RowOf(op.tres, r, c),
                          op.table, op.out + r * c, c);
    }
  });
}

template <typename T, int A, bool R>
void RunPass(int pass, const Operands<T>& op, float* f0, float* f1) {
  switch (pass) {
    case kStats: Statistics(op, f0, f1); break;
    case kNormalize: Normalize<T, A, R>(op); break;
    case kSums: Sums<T, A, R>(op, f0, f1); break;
    case kInputGrad: InputGrad<T, A, R>(op); break;
    case kTangent: Tangent<T, A, R>(op); break;
  }
}

template <typename T, bool R>
void RunActivation(int pass, int activation, const Operands<T>& op, float* f0, float* f1) {
  switch (activation) {
    case kIdentity: RunPass<T, kIdentity, R>(pass, op, f0, f1); break;
    case kRelu: RunPass<T, kRelu, R>(pass, op, f0, f1); break;
    case kRelu6: RunPass<T, kRelu6, R>(pass, op, f0, f1); break;
    case kSwish: RunPass<T, kSwish, R>(pass, op, f0, f1); break;
    case kHardSwish: RunPass<T, kHardSwish, R>(pass, op, f0, f1); break;
    case kGelu: RunPass<T, kGelu, R>(pass, op, f0, f1); break;
  }
}

// Operand and result counts per pass, without and with the residual.
constexpr int kArgs[kPasses][2] = {{1, 1}, {2, 3}, {4, 5}, {3, 3}, {3, 5}};
constexpr int kRets[kPasses][2] = {{2, 2}, {1, 1}, {2, 3}, {1, 1}, {1, 1}};
// Which operands are float32 (k, C) tables (bit i: operand i), and their k.
constexpr int kTables[kPasses] = {0, 0b10, 0b110, 0b100, 0b100};
constexpr int kTableRows[kPasses][3] = {{0, 0, 0}, {0, 2, 0}, {0, 2, 2}, {0, 0, 5}, {0, 0, 5}};
// Which results are (C,) float32 (bit i: result i; the others are (M, C) of x's dtype).
constexpr int kVectorResults[kPasses] = {0b11, 0, 0b011, 0, 0};

template <typename T>
ffi::Error Run(int pass, int activation, bool residual, const std::vector<void*>& in,
               const std::vector<void*>& out, int64_t m, int64_t c) {
  Operands<T> op{m, c, static_cast<const T*>(in[0]), nullptr, nullptr, nullptr,
                 nullptr, nullptr, nullptr};
  float *f0 = nullptr, *f1 = nullptr;
  switch (pass) {
    case kStats:
      f0 = static_cast<float*>(out[0]);
      f1 = static_cast<float*>(out[1]);
      break;
    case kNormalize:
      op.table = static_cast<const float*>(in[1]);
      if (residual) op.res = static_cast<const T*>(in[2]);
      op.out = static_cast<T*>(out[0]);
      break;
    case kSums:
      op.table = static_cast<const float*>(in[1]);
      op.mr = static_cast<const float*>(in[2]);
      op.g = static_cast<const T*>(in[3]);
      if (residual) {
        op.res = static_cast<const T*>(in[4]);
        op.out = static_cast<T*>(out[2]);
      }
      f0 = static_cast<float*>(out[0]);
      f1 = static_cast<float*>(out[1]);
      break;
    case kInputGrad:
      op.g = static_cast<const T*>(in[1]);
      op.table = static_cast<const float*>(in[2]);
      op.out = static_cast<T*>(out[0]);
      break;
    case kTangent:
      op.g = static_cast<const T*>(in[1]);
      op.table = static_cast<const float*>(in[2]);
      if (residual) {
        op.res = static_cast<const T*>(in[3]);
        op.tres = static_cast<const T*>(in[4]);
      }
      op.out = static_cast<T*>(out[0]);
      break;
  }
  if (residual) {
    RunActivation<T, true>(pass, activation, op, f0, f1);
  } else {
    RunActivation<T, false>(pass, activation, op, f0, f1);
  }
  return ffi::Error::Success();
}

ffi::Error NormAct(ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t pass,
                   int64_t activation, bool residual) {
  if (pass < 0 || pass >= kPasses || activation < 0 || activation >= kActivations) {
    return ffi::Error::InvalidArgument("cnnjax CPU batch norm: unknown pass or activation " +
                                       std::to_string(pass) + "/" + std::to_string(activation));
  }
  if (int(args.size()) != kArgs[pass][residual] || int(rets.size()) != kRets[pass][residual]) {
    return ffi::Error::InvalidArgument("cnnjax CPU batch norm: wrong operand count for pass " +
                                       std::to_string(pass));
  }
  std::vector<void*> in, out;
  auto x = args.get<ffi::AnyBuffer>(0);
  if (!x.has_value()) return x.error();
  const auto dims = x->dimensions();
  if (dims.size() != 2) {
    return ffi::Error::InvalidArgument("cnnjax CPU batch norm: x must be (M, C)");
  }
  const int64_t m = dims[0], c = dims[1];
  const ffi::DataType type = x->element_type();
  if (type != ffi::DataType::F32 && type != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("cnnjax CPU batch norm: dtype must be f32 or bf16");
  }
  for (size_t i = 0; i < args.size(); ++i) {
    auto a = args.get<ffi::AnyBuffer>(i);
    if (!a.has_value()) return a.error();
    const auto d = a->dimensions();
    const bool table = (kTables[pass] >> i) & 1;
    const bool ok = table ? (a->element_type() == ffi::DataType::F32 && d.size() == 2 &&
                             d[0] == kTableRows[pass][i] && d[1] == c)
                          : (a->element_type() == type && d.size() == 2 && d[0] == m && d[1] == c);
    if (!ok) {
      return ffi::Error::InvalidArgument("cnnjax CPU batch norm: operand " + std::to_string(i) +
                                         " of pass " + std::to_string(pass) + " has the wrong " +
                                         "shape or dtype");
    }
    in.push_back(a->untyped_data());
  }
  for (size_t i = 0; i < rets.size(); ++i) {
    auto r = rets.get<ffi::AnyBuffer>(i);
    if (!r.has_value()) return r.error();
    const auto d = (*r)->dimensions();
    const bool vector = (kVectorResults[pass] >> i) & 1;
    const bool ok = vector ? ((*r)->element_type() == ffi::DataType::F32 && d.size() == 1 &&
                              d[0] == c)
                           : ((*r)->element_type() == type && d.size() == 2 && d[0] == m &&
                              d[1] == c);
    if (!ok) {
      return ffi::Error::InvalidArgument("cnnjax CPU batch norm: result " + std::to_string(i) +
                                         " of pass " + std::to_string(pass) + " has the wrong " +
                                         "shape or dtype");
    }
    out.push_back((*r)->untyped_data());
  }
  if (m == 0) {  // no rows (the Python side keeps these on XLA): statistics NaN, sums 0
    for (size_t i = 0; i < out.size(); ++i) {
      if ((kVectorResults[pass] >> i) & 1) {
        std::fill_n(static_cast<float*>(out[i]), c, pass == kStats ? NAN : 0.0f);
      }
    }
    return ffi::Error::Success();
  }
  if (c == 0) return ffi::Error::Success();
  try {
    return type == ffi::DataType::F32
               ? Run<float>(int(pass), int(activation), residual, in, out, m, c)
               : Run<Bf16>(int(pass), int(activation), residual, in, out, m, c);
  } catch (const std::bad_alloc&) {
    return ffi::Error::Internal("cnnjax CPU batch norm: out of memory");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("cnnjax CPU batch norm: ") + e.what());
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxCpuNormAct, NormAct,
                              ffi::Ffi::Bind()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("pass")
                                  .Attr<int64_t>("activation")
                                  .Attr<bool>("residual"));
