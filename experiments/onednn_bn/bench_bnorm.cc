// What a oneDNN batch-norm kernel would cost: training-mode batch_normalization forward
// (statistics + normalisation, ReLU fused; with --residual the residual add + ReLU fused:
// fuse_norm_add_relu) and backward (diff_src, diff_scale, diff_shift), NHWC float32, at the
// shapes given, timed in process CPU time (median of repeats). Built and run by
// experiments/onednn_bn/run.py against the onednn-cpu-gomp wheel cnnjax's convolutions use.
#include <algorithm>
#include <unordered_map>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

static double cpu_ms() { return 1e3 * double(std::clock()) / CLOCKS_PER_SEC; }

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: bench_bnorm N H W C residual(0/1) repeats\n");
    return 2;
  }
  const long n = std::atol(argv[1]), h = std::atol(argv[2]), w = std::atol(argv[3]),
             c = std::atol(argv[4]);
  const bool residual = std::atoi(argv[5]) != 0;
  const int repeats = std::atoi(argv[6]);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  memory::desc data({n, c, h, w}, dt::f32, tag::nhwc), stat({c}, dt::f32, tag::x);
  auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift |
               (residual ? dnnl::normalization_flags::fuse_norm_add_relu
                         : dnnl::normalization_flags::fuse_norm_relu);
  auto fpd = dnnl::batch_normalization_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, data, data, 1e-5f, flags);
  // oneDNN 3.2 (the wheel) rejects use_shift in the backward pass at execution (oneDNN issue
  // #1717); the shift's gradient is the sum of the ReLU-masked dy, which the kernel forms anyway.
  auto bpd = dnnl::batch_normalization_backward::primitive_desc(
      eng, dnnl::prop_kind::backward, data, data, data, 1e-5f,
      flags & ~dnnl::normalization_flags::use_shift, fpd);
  std::printf("impl fwd %s bwd %s\n", fpd.impl_info_str(), bpd.impl_info_str());
  auto m = [&](const memory::desc& d) { return memory(d, eng); };
  memory x = m(data), y = m(data), r = m(data), dy = m(data), dx = m(data), dr = m(data);
  memory scale = m(stat), shift = m(stat), mean = m(stat), var = m(stat), dscale = m(stat),
         ws = m(fpd.workspace_desc());
  for (memory* mem : {&x, &r, &dy, &scale}) {
    float* p = static_cast<float*>(mem->get_data_handle());
    for (size_t i = 0; i < mem->get_desc().get_size() / 4; ++i) p[i] = float(i % 17) * 0.1f - 0.7f;
  }
  std::fill_n(static_cast<float*>(shift.get_data_handle()), c, 0.1f);
  dnnl::batch_normalization_forward fwd(fpd);
  dnnl::batch_normalization_backward bwd(bpd);
  std::vector<double> tf, tb;
  for (int i = 0; i <= repeats; ++i) {
    double t0 = cpu_ms();
    std::unordered_map<int, memory> fa = {{DNNL_ARG_SRC, x}, {DNNL_ARG_DST, y},
        {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}, {DNNL_ARG_MEAN, mean},
        {DNNL_ARG_VARIANCE, var}, {DNNL_ARG_WORKSPACE, ws}};
    if (residual) fa.emplace(DNNL_ARG_SRC_1, r);
    fwd.execute(s, fa);
    s.wait();
    double t1 = cpu_ms();
    std::unordered_map<int, memory> ba = {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy},
        {DNNL_ARG_SCALE, scale}, {DNNL_ARG_MEAN, mean},
        {DNNL_ARG_VARIANCE, var}, {DNNL_ARG_WORKSPACE, ws}, {DNNL_ARG_DIFF_SRC, dx},
        {DNNL_ARG_DIFF_SCALE, dscale}};
    if (residual) ba.emplace(DNNL_ARG_DIFF_SRC_1, dr);
    bwd.execute(s, ba);
    s.wait();
    double t2 = cpu_ms();
    if (i) { tf.push_back(t1 - t0); tb.push_back(t2 - t1); }  // the first call is a warm-up
  }
  std::sort(tf.begin(), tf.end());
  std::sort(tb.begin(), tb.end());
  std::printf("fwd %.3f ms bwd %.3f ms total %.3f ms\n", tf[tf.size() / 2], tb[tb.size() / 2],
              tf[tf.size() / 2] + tb[tb.size() / 2]);
  return 0;
}
