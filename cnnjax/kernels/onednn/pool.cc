// Max and average pooling (cnnjax.kernels.pool) on the CPU, as one XLA FFI handler: NHWC
// activations, float32 or bfloat16, any window (up to 127 values: the window position of a
// maximum is an int8; cnnjax.kernels.pool sends at most 64), stride, padding and ceil_mode
// overhang, float32 accumulation.
//
//   pass 0 max            (x) -> y
//   pass 1 max + argmax   (x) -> (y, arg)      arg: the window position (row-major) of the max
//   pass 2 max select     (arg, t) -> ty       t at each window's chosen position (the tangent)
//   pass 3 max gradient   (arg, dy) -> dx      dy added at each window's chosen position
//   pass 4 average        (x) -> y             window sum / divisor
//   pass 5 avg gradient   (dy) -> dx           dy / divisor added over each window
//
// The same passes and rules as the Pallas kernels (pool.py): padding never wins a max; ties
// keep the first maximum in row-major order and a NaN always takes over (so the last NaN of
// a window gets the gradient, PyTorch's rule); the divisor counts the explicitly padded
// positions when include_pad is set, never the ceil_mode overhang. The forward passes split
// the output rows over the team; the gradients scatter image by image (an image per thread at
// a time, so no two threads add to one value, and each value's additions come in the output's
// row-major order).
//
// geometry (15 values): n h w c ho wo kh kw sh sw pad_top pad_left include_pad pad_bottom
// pad_right.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace cnnjax_cpu;

enum Pass { kMax, kMaxArgmax, kMaxSelect, kMaxGrad, kAvg, kAvgGrad, kPasses };

struct Geometry {
  int64_t n, h, w, c, ho, wo, kh, kw, sh, sw, pad_top, pad_left, include_pad, pad_bottom,
      pad_right;

  // Values of window o along an axis that count in the average (see pool.py's _count).
  static int64_t Count(int64_t o, int64_t s, int64_t pad, int64_t pad_end, int64_t k,
                       int64_t size, bool include_pad) {
    const int64_t start = o * s - pad;
    const int64_t lo = include_pad ? -pad : 0, hi = include_pad ? size + pad_end : size;
    return std::min(start + k, hi) - std::max(start, lo);
  }
  float Divisor(int64_t oh, int64_t ow) const {
    const int64_t count = Count(oh, sh, pad_top, pad_bottom, kh, h, include_pad) *
                          Count(ow, sw, pad_left, pad_right, kw, w, include_pad);
    return float(std::max<int64_t>(count, 1));
  }
};

// body(t, ih, iw) for each position t (row-major) of window (oh, ow) that lies inside the input.
template <typename Body>
CNNJAX_INLINE void ForWindow(const Geometry& g, int64_t oh, int64_t ow, const Body& body) {
  for (int64_t di = 0; di < g.kh; ++di) {
    const int64_t ih = oh * g.sh + di - g.pad_top;
    if (ih < 0 || ih >= g.h) continue;
    for (int64_t dj = 0; dj < g.kw; ++dj) {
      const int64_t iw = ow * g.sw + dj - g.pad_left;
      if (iw >= 0 && iw < g.w) body(int8_t(di * g.kw + dj), ih, iw);
    }
  }
}

// One output row (n, oh): every window of the row, every channel.
template <typename T, bool kArgmax>
void MaxRow(const Geometry& g, const T* __restrict x, T* __restrict y, int8_t* __restrict arg,
            int64_t n, int64_t oh, float* __restrict best, int8_t* __restrict pos) {
  const int64_t c = g.c;
  for (int64_t ow = 0; ow < g.wo; ++ow) {
    std::fill(best, best + c, -std::numeric_limits<float>::infinity());
    std::fill(pos, pos + c, int8_t(0));
    ForWindow(g, oh, ow, [&](int8_t t, int64_t ih, int64_t iw) {
      const T* __restrict v = x + ((n * g.h + ih) * g.w + iw) * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        const float f = ToFloat(v[j]);
        const bool take = f > best[j] || f != f;  // strict: ties keep the first; NaN wins
        best[j] = take ? f : best[j];
        if constexpr (kArgmax) pos[j] = take ? t : pos[j];
      }
    });
    const int64_t o = ((n * g.ho + oh) * g.wo + ow) * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) Store(y + o + j, best[j]);
    if constexpr (kArgmax) std::memcpy(arg + o, pos, size_t(c));
  }
}

// Elements a pass touches: what decides whether it runs on the team.
int64_t Work(const Geometry& g) { return g.n * g.ho * g.wo * g.c * g.kh * g.kw; }

// Per-thread scratch (float32 accumulators), allocated before the threads start so that an
// allocation failure is an error, not an abort inside the parallel region.
struct Scratch {
  std::vector<float> data;
  int64_t per_thread;
  Scratch(int64_t per_thread) : data(size_t(Team()) * per_thread), per_thread(per_thread) {}
  float* For(int thread) { return data.data() + thread * per_thread; }
};

template <typename T, bool kArgmax>
void Max(const Geometry& g, const T* x, T* y, int8_t* arg) {
  Scratch best(g.c);
  std::vector<int8_t> positions(size_t(Team()) * g.c);
  ParallelParts(g.n * g.ho, Work(g), [&](int64_t row, int thread) {
    MaxRow<T, kArgmax>(g, x, y, arg, row / g.ho, row % g.ho, best.For(thread),
                       positions.data() + thread * g.c);
  });
}

// Window sums: y = t at each window's chosen position (kSelect: max pooling's tangent), or the
// window's values summed and divided by its divisor (average pooling).
template <typename T, bool kSelect>
void WindowSums(const Geometry& g, const int8_t* arg, const T* x, T* y) {
  const int64_t c = g.c;
  Scratch acc(c);
  ParallelParts(g.n * g.ho, Work(g), [&](int64_t row, int thread) {
    const int64_t n = row / g.ho, oh = row % g.ho;
    float* __restrict a = acc.For(thread);
    for (int64_t ow = 0; ow < g.wo; ++ow) {
      const int64_t o = (row * g.wo + ow) * c;
      std::fill(a, a + c, 0.0f);
      ForWindow(g, oh, ow, [&](int8_t pos, int64_t ih, int64_t iw) {
        const T* __restrict v = x + ((n * g.h + ih) * g.w + iw) * c;
        if constexpr (kSelect) {
          const int8_t* __restrict chosen = arg + o;
#pragma omp simd
          for (int64_t j = 0; j < c; ++j) a[j] += chosen[j] == pos ? ToFloat(v[j]) : 0.0f;
        } else {
#pragma omp simd
          for (int64_t j = 0; j < c; ++j) a[j] += ToFloat(v[j]);
        }
      });
      const float scale = kSelect ? 1.0f : 1.0f / g.Divisor(oh, ow);
      T* __restrict out = y + o;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) Store(out + j, a[j] * scale);
    }
  });
}

// dx = dy scattered to each window's chosen position (kMaxGrad) or spread over each window
// divided by its divisor (kAvgGrad), one image per iteration, accumulated in float32.
template <typename T, bool kMaxPool>
void ScatterGrad(const Geometry& g, const int8_t* arg, const T* dy, T* dx) {
  const int64_t c = g.c, image = g.h * g.w * c;
  Scratch acc(image);
  ParallelParts(g.n, Work(g), [&](int64_t n, int thread) {
    float* __restrict a = acc.For(thread);
    std::fill(a, a + image, 0.0f);
    for (int64_t oh = 0; oh < g.ho; ++oh) {
      for (int64_t ow = 0; ow < g.wo; ++ow) {
        const int64_t o = ((n * g.ho + oh) * g.wo + ow) * c;
        const T* __restrict d = dy + o;
        const float scale = kMaxPool ? 1.0f : 1.0f / g.Divisor(oh, ow);
        ForWindow(g, oh, ow, [&](int8_t pos, int64_t ih, int64_t iw) {
          float* __restrict target = a + (ih * g.w + iw) * c;
          if constexpr (kMaxPool) {
            const int8_t* __restrict chosen = arg + o;
#pragma omp simd
            for (int64_t j = 0; j < c; ++j) target[j] += chosen[j] == pos ? ToFloat(d[j]) : 0.0f;
          } else {
#pragma omp simd
            for (int64_t j = 0; j < c; ++j) target[j] += ToFloat(d[j]) * scale;
          }
        });
      }
    }
    T* __restrict out = dx + n * image;
#pragma omp simd
    for (int64_t j = 0; j < image; ++j) Store(out + j, a[j]);
  });
}

template <typename T>
void Run(int pass, const Geometry& g, const std::vector<void*>& in, const std::vector<void*>& out) {
  switch (pass) {
    case kMax:
      Max<T, false>(g, static_cast<const T*>(in[0]), static_cast<T*>(out[0]), nullptr);
      break;
    case kMaxArgmax:
      Max<T, true>(g, static_cast<const T*>(in[0]), static_cast<T*>(out[0]),
                   static_cast<int8_t*>(out[1]));
      break;
    case kMaxSelect:
      WindowSums<T, true>(g, static_cast<const int8_t*>(in[0]), static_cast<const T*>(in[1]),
                          static_cast<T*>(out[0]));
      break;
    case kMaxGrad:
      ScatterGrad<T, true>(g, static_cast<const int8_t*>(in[0]), static_cast<const T*>(in[1]),
                           static_cast<T*>(out[0]));
      break;
    case kAvg:
      WindowSums<T, false>(g, nullptr, static_cast<const T*>(in[0]), static_cast<T*>(out[0]));
      break;
    case kAvgGrad:
      ScatterGrad<T, false>(g, nullptr, static_cast<const T*>(in[0]), static_cast<T*>(out[0]));
      break;
  }
}

constexpr int kArgs[kPasses] = {1, 1, 2, 2, 1, 1};
constexpr int kRets[kPasses] = {1, 2, 1, 1, 1, 1};
// Each operand and result: 'i' an input-shaped (N*H, W, C) array, 'o' an output-shaped
// (N*H', W', C) one, 'a' an output-shaped int8 argmax; of the activations' dtype unless 'a'.
constexpr const char* kArgKinds[kPasses] = {"i", "i", "ai", "ao", "i", "o"};
constexpr const char* kRetKinds[kPasses] = {"o", "oa", "o", "i", "o", "i"};

// Whether buffer b is of `kind` for geometry g and activation dtype `type`.
bool Matches(const ffi::AnyBuffer& b, char kind, const Geometry& g, ffi::DataType type) {
  const auto d = b.dimensions();
  const bool input = kind == 'i';
  const ffi::DataType want = kind == 'a' ? ffi::DataType::S8 : type;
  return b.element_type() == want && d.size() == 3 && d[0] == g.n * (input ? g.h : g.ho) &&
         d[1] == (input ? g.w : g.wo) && d[2] == g.c;
}

ffi::Error Pool(ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t pass,
                ffi::Span<const int64_t> geometry) {
  if (pass < 0 || pass >= kPasses || geometry.size() != 15) {
    return ffi::Error::InvalidArgument("cnnjax CPU pooling: unknown pass " +
                                       std::to_string(pass) + " or malformed geometry");
  }
  if (int(args.size()) != kArgs[pass] || int(rets.size()) != kRets[pass]) {
    return ffi::Error::InvalidArgument("cnnjax CPU pooling: wrong operand count for pass " +
                                       std::to_string(pass));
  }
  Geometry g;
  std::memcpy(&g, geometry.begin(), sizeof(Geometry));
  if (g.kh < 1 || g.kw < 1 || g.kh * g.kw > 127 || g.sh < 1 || g.sw < 1 ||
      std::min({g.n, g.h, g.w, g.c, g.ho, g.wo, g.pad_top, g.pad_left}) < 0) {
    return ffi::Error::InvalidArgument("cnnjax CPU pooling: malformed geometry (a window of 1 "
                                       "to 127 values, positive strides, no negative size)");
  }
  auto last = args.get<ffi::AnyBuffer>(args.size() - 1);  // the activations (x, t or dy)
  if (!last.has_value()) return last.error();
  const ffi::DataType type = last->element_type();
  if (type != ffi::DataType::F32 && type != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("cnnjax CPU pooling: dtype must be f32 or bf16");
  }
  std::vector<void*> in, out;
  for (size_t i = 0; i < args.size(); ++i) {
    auto a = args.get<ffi::AnyBuffer>(i);
    if (!a.has_value()) return a.error();
    if (!Matches(*a, kArgKinds[pass][i], g, type)) {
      return ffi::Error::InvalidArgument("cnnjax CPU pooling: operand " + std::to_string(i) +
                                         " of pass " + std::to_string(pass) +
                                         " does not match the geometry");
    }
    in.push_back(a->untyped_data());
  }
  for (size_t i = 0; i < rets.size(); ++i) {
    auto r = rets.get<ffi::AnyBuffer>(i);
    if (!r.has_value()) return r.error();
    if (!Matches(**r, kRetKinds[pass][i], g, type)) {
      return ffi::Error::InvalidArgument("cnnjax CPU pooling: result " + std::to_string(i) +
                                         " of pass " + std::to_string(pass) +
                                         " does not match the geometry");
    }
    out.push_back((*r)->untyped_data());
  }
  if (g.n * g.h * g.w * g.c == 0) {  // cnnjax.kernels.pool keeps empty inputs on XLA
    return ffi::Error::InvalidArgument("cnnjax CPU pooling: empty input");
  }
  try {
    if (type == ffi::DataType::F32) {
      Run<float>(int(pass), g, in, out);
    } else {
      Run<Bf16>(int(pass), g, in, out);
    }
    return ffi::Error::Success();
  } catch (const std::bad_alloc&) {
    return ffi::Error::Internal("cnnjax CPU pooling: out of memory");
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("cnnjax CPU pooling: ") + e.what());
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxCpuPool, Pool,
                              ffi::Ffi::Bind()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<int64_t>("pass")
                                  .Attr<ffi::Span<const int64_t>>("geometry"));
