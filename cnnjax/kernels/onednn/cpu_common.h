// What the CPU extension's batch-norm (norm_act.cc) and pooling (pool.cc) passes share: bfloat16
// loads and stores, the OpenMP team, and a row loop that runs small calls on the calling thread.

#ifndef CNNJAX_KERNELS_ONEDNN_CPU_COMMON_H_
#define CNNJAX_KERNELS_ONEDNN_CPU_COMMON_H_

#include <omp.h>

#include <cstdint>

int CnnjaxTeamSize();  // conv.cc: the loader's thread count (0: OpenMP's default)

namespace cnnjax_cpu {

// The element functions must inline into the row loops, or GCC does not vectorise the loops.
#define CNNJAX_INLINE inline __attribute__((always_inline))

using Bf16 = uint16_t;  // a bfloat16's bits (a plain integer, so loads of it vectorise)

CNNJAX_INLINE float ToFloat(float v) { return v; }
CNNJAX_INLINE float ToFloat(Bf16 v) { return __builtin_bit_cast(float, uint32_t(v) << 16); }

CNNJAX_INLINE void Store(float* p, float v) { *p = v; }
// Round to nearest even, as XLA converts; a NaN stays a (quiet) NaN.
CNNJAX_INLINE void Store(Bf16* p, float v) {
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  *p = uint16_t(nan ? ((u >> 16) | 0x40u) : rounded);
}

// Calls with fewer elements (1 MiB of float32) run on the calling thread: they take well under a
// millisecond, and a team's start and its threads' spinning afterwards cost more than they save
// (most of all where several processes share the cores, as pytest-xdist's workers do).
constexpr int64_t kSerialElements = int64_t(1) << 18;

inline int Team() {
  const int team = CnnjaxTeamSize();
  return team > 0 ? team : omp_get_max_threads();
}

// body(part, thread) for part in [0, parts), over the team unless `elements` is small; `thread`
// indexes per-thread scratch allocated before the call (at most Team() threads).
template <typename Body>
void ParallelParts(int64_t parts, int64_t elements, const Body& body) {
  const int team = Team();
  const bool serial = elements < kSerialElements || team == 1;
#pragma omp parallel for schedule(static) num_threads(team) if (!serial)
  for (int64_t p = 0; p < parts; ++p) body(p, serial ? 0 : omp_get_thread_num());
}

}  // namespace cnnjax_cpu

#endif  // CNNJAX_KERNELS_ONEDNN_CPU_COMMON_H_
