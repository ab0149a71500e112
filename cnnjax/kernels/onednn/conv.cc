// 2-D convolutions on oneDNN as XLA FFI handlers for the CPU platform: forward, input gradient
// and weight gradient, NHWC activations and HWIO kernels (the cnnjax conventions), float32 or
// bfloat16, any stride, explicit padding, dilation and feature groups.
//
// oneDNN picks the algorithm (convolution_auto) and the kernel's memory format (format_tag::any;
// the caller's HWIO kernel is reordered into it, a small copy). Activations stay in the caller's
// NHWC, as PyTorch's channels_last does: letting oneDNN choose their format too (a blocked
// nChw16c on AVX512) costs a reorder of the input and the output around every call: 7% more
// CPU time over ResNet-20's shapes on one thread (experiments/results/cpu_conv_breakdown.md,
// "onednn any"). Only where oneDNN has nothing but its reference implementation for NHWC does it
// choose the activations' format too (the `any_activations` attribute makes it choose them
// always, to measure that choice). The primitives (and their reorders) are created once per
// (pass, shape, configuration) and cached for the life of the process. oneDNN's scratchpad is
// user-managed, so one primitive can run from several XLA threads at once; per-thread buffers
// hold the scratchpad and the reordered operands and are reused between calls.
//
// Threads: this build of oneDNN runs on GNU OpenMP. A call runs an OpenMP team (the size of
// omp_get_max_threads(), i.e. OMP_NUM_THREADS or the cores) started from the XLA thread that
// calls the handler, which waits; XLA's own thread pool is not used by oneDNN.

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

enum class Pass { kForward, kInputGrad, kWeightGrad };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Everything that determines a primitive.
struct Geometry {
  Pass pass;
  memory::data_type type;
  int64_t n, h, w, c;    // input (N, H, W, C)
  int64_t kh, kw, o, g;  // kernel (kh, kw, C / g, O), g feature groups
  int64_t oh, ow;        // output (N, oh, ow, O)
  memory::dims strides, dilations, pad_lo, pad_hi;  // dilations in oneDNN's convention: d - 1
  bool any_activations;  // oneDNN chooses the activations' format even where NHWC has a fast path

  std::string Key() const {
    std::string key;
    for (int64_t v : {int64_t(pass), int64_t(type), n, h, w, c, kh, kw, o, g, oh, ow,
                      int64_t(any_activations)}) {
      key += std::to_string(v) + ",";
    }
    for (const auto* dims : {&strides, &dilations, &pad_lo, &pad_hi}) {
      for (int64_t v : *dims) key += std::to_string(v) + ",";
    }
    return key;
  }

  memory::desc Src(bool any) const {
    return memory::desc({n, c, h, w}, type, any ? memory::format_tag::any : memory::format_tag::nhwc);
  }
  memory::desc Dst(bool any) const {
    return memory::desc({n, o, oh, ow}, type, any ? memory::format_tag::any : memory::format_tag::nhwc);
  }
  memory::desc Weights(bool any) const {
    if (g == 1) {
      return memory::desc({o, c, kh, kw}, type, any ? memory::format_tag::any : memory::format_tag::hwio);
    }
    memory::dims dims = {g, o / g, c / g, kh, kw};
    if (any) return memory::desc(dims, type, memory::format_tag::any);
    // HWIO with I = C / g and O = g * (O / g): element (gi, oc, ic, y, x) sits at
    // ((y * kw + x) * (C / g) + ic) * O + gi * (O / g) + oc.
    return memory::desc(dims, type, memory::dims{o / g, 1, o, kw * (c / g) * o, (c / g) * o});
  }
};

// A cached primitive: `inputs[i]` / `output` are the caller's layouts; a reorder is set where
// the primitive's own format differs.
struct Operand {
  int arg;
  memory::desc user, prim;
  dnnl::reorder reorder;  // empty when user == prim
  bool needs_reorder;
};

struct Plan {
  dnnl::primitive prim;
  Operand inputs[2];
  Operand output;
  size_t scratch_bytes;
  std::string impl;
};

Operand MakeOperand(int arg, const memory::desc& user, const memory::desc& prim, bool is_output) {
  Operand op{arg, user, prim, dnnl::reorder(), user != prim};
  if (op.needs_reorder) {
    op.reorder = is_output ? dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), prim, Engine(), user))
                           : dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), user, Engine(), prim));
  }
  return op;
}

// `any_activations`: oneDNN chooses the activations' format too (else they stay NHWC).
std::unique_ptr<Plan> MakePlan(const Geometry& geo, bool any_activations) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_auto;
  const memory::desc src = geo.Src(any_activations), dst = geo.Dst(any_activations);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, algo, src, geo.Weights(true), dst,
      geo.strides, geo.dilations, geo.pad_lo, geo.pad_hi, attr);
  auto plan = std::make_unique<Plan>();
  if (geo.pass == Pass::kForward) {
    plan->prim = dnnl::convolution_forward(fwd);
    plan->inputs[0] = MakeOperand(DNNL_ARG_SRC, geo.Src(false), fwd.src_desc(), false);
    plan->inputs[1] = MakeOperand(DNNL_ARG_WEIGHTS, geo.Weights(false), fwd.weights_desc(), false);
    plan->output = MakeOperand(DNNL_ARG_DST, geo.Dst(false), fwd.dst_desc(), true);
    plan->scratch_bytes = fwd.scratchpad_desc().get_size();
    plan->impl = fwd.impl_info_str();
  } else if (geo.pass == Pass::kInputGrad) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), algo, src, geo.Weights(true), dst, geo.strides,
        geo.dilations, geo.pad_lo, geo.pad_hi, fwd, attr);
    plan->prim = dnnl::convolution_backward_data(pd);
    plan->inputs[0] = MakeOperand(DNNL_ARG_DIFF_DST, geo.Dst(false), pd.diff_dst_desc(), false);
    plan->inputs[1] = MakeOperand(DNNL_ARG_WEIGHTS, geo.Weights(false), pd.weights_desc(), false);
    plan->output = MakeOperand(DNNL_ARG_DIFF_SRC, geo.Src(false), pd.diff_src_desc(), true);
    plan->scratch_bytes = pd.scratchpad_desc().get_size();
    plan->impl = pd.impl_info_str();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), algo, src, geo.Weights(true), dst, geo.strides,
        geo.dilations, geo.pad_lo, geo.pad_hi, fwd, attr);
    plan->prim = dnnl::convolution_backward_weights(pd);
    plan->inputs[0] = MakeOperand(DNNL_ARG_SRC, geo.Src(false), pd.src_desc(), false);
    plan->inputs[1] = MakeOperand(DNNL_ARG_DIFF_DST, geo.Dst(false), pd.diff_dst_desc(), false);
    plan->output = MakeOperand(DNNL_ARG_DIFF_WEIGHTS, geo.Weights(false), pd.diff_weights_desc(), true);
    plan->scratch_bytes = pd.scratchpad_desc().get_size();
    plan->impl = pd.impl_info_str();
  }
  return plan;
}

std::unique_ptr<Plan> MakePlan(const Geometry& geo) {
  if (geo.any_activations) return MakePlan(geo, true);
  auto plan = MakePlan(geo, false);
  return plan->impl.rfind("ref", 0) == 0 ? MakePlan(geo, true) : std::move(plan);
}

const Plan& GetPlan(const Geometry& geo) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::unique_ptr<Plan>> cache;
  const std::string key = geo.Key();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, MakePlan(geo)).first;
  return *it->second;
}

// A per-thread, 64-byte aligned buffer that only grows.
struct Buffer {
  void* data = nullptr;
  size_t size = 0;
  void* Get(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      size = (bytes + 63) / 64 * 64;
      data = std::aligned_alloc(64, size);
    }
    return data;
  }
  ~Buffer() { std::free(data); }
};

void Run(const Geometry& geo, void* in0, void* in1, void* out) {
  const Plan& plan = GetPlan(geo);
  thread_local Buffer buffers[4];  // reordered in0, in1, out; scratchpad
  thread_local dnnl::stream stream(Engine());
  std::unordered_map<int, memory> args;
  void* user[2] = {in0, in1};
  for (int i = 0; i < 2; ++i) {
    const Operand& op = plan.inputs[i];
    memory user_mem(op.user, Engine(), user[i]);
    if (op.needs_reorder) {
      memory prim_mem(op.prim, Engine(), buffers[i].Get(op.prim.get_size()));
      op.reorder.execute(stream, user_mem, prim_mem);
      args.emplace(op.arg, prim_mem);
    } else {
      args.emplace(op.arg, user_mem);
    }
  }
  const Operand& res = plan.output;
  memory out_mem(res.user, Engine(), out);
  memory prim_out = res.needs_reorder ? memory(res.prim, Engine(), buffers[2].Get(res.prim.get_size()))
                                      : out_mem;
  args.emplace(res.arg, prim_out);
  if (plan.scratch_bytes) {
    args.emplace(DNNL_ARG_SCRATCHPAD,
                 memory(memory::desc({int64_t(plan.scratch_bytes)}, memory::data_type::u8,
                                     memory::format_tag::x),
                        Engine(), buffers[3].Get(plan.scratch_bytes)));
  }
  plan.prim.execute(stream, args);
  if (res.needs_reorder) res.reorder.execute(stream, prim_out, out_mem);
  stream.wait();
}

ffi::Error Dispatch(Pass pass, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                    ffi::Span<const int64_t> input_shape, ffi::Span<const int64_t> kernel_shape,
                    ffi::Span<const int64_t> output_shape, ffi::Span<const int64_t> strides,
                    ffi::Span<const int64_t> padding, ffi::Span<const int64_t> dilation,
                    int64_t groups, bool any_activations) {
  if (a.element_type() != b.element_type() || a.element_type() != out->element_type()) {
    return ffi::Error::InvalidArgument("oneDNN convolution: operands differ in dtype");
  }
  memory::data_type type;
  switch (a.element_type()) {
    case ffi::DataType::F32: type = memory::data_type::f32; break;
    case ffi::DataType::BF16: type = memory::data_type::bf16; break;
    default: return ffi::Error::InvalidArgument("oneDNN convolution: dtype must be f32 or bf16");
  }
  if (input_shape.size() != 4 || kernel_shape.size() != 4 || output_shape.size() != 4 ||
      strides.size() != 2 || padding.size() != 4 || dilation.size() != 2) {
    return ffi::Error::InvalidArgument("oneDNN convolution: malformed shape attributes");
  }
  Geometry geo{pass, type,
               input_shape[0], input_shape[1], input_shape[2], input_shape[3],
               kernel_shape[0], kernel_shape[1], kernel_shape[3], groups,
               output_shape[1], output_shape[2],
               {strides[0], strides[1]}, {dilation[0] - 1, dilation[1] - 1},
               {padding[0], padding[2]}, {padding[1], padding[3]}, any_activations};
  try {
    Run(geo, a.untyped_data(), b.untyped_data(), out->untyped_data());
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

template <Pass kPass>
ffi::Error Handle(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                  ffi::Span<const int64_t> input_shape, ffi::Span<const int64_t> kernel_shape,
                  ffi::Span<const int64_t> output_shape, ffi::Span<const int64_t> strides,
                  ffi::Span<const int64_t> padding, ffi::Span<const int64_t> dilation,
                  int64_t groups, bool any_activations) {
  return Dispatch(kPass, a, b, out, input_shape, kernel_shape, output_shape, strides, padding,
                  dilation, groups, any_activations);
}

}  // namespace

#define CNNJAX_BIND                                                            \
  ffi::Ffi::Bind()                                                             \
      .Arg<ffi::AnyBuffer>()                                                   \
      .Arg<ffi::AnyBuffer>()                                                   \
      .Ret<ffi::AnyBuffer>()                                                   \
      .Attr<ffi::Span<const int64_t>>("input_shape")                           \
      .Attr<ffi::Span<const int64_t>>("kernel_shape")                          \
      .Attr<ffi::Span<const int64_t>>("output_shape")                          \
      .Attr<ffi::Span<const int64_t>>("strides")                               \
      .Attr<ffi::Span<const int64_t>>("padding")                               \
      .Attr<ffi::Span<const int64_t>>("dilation")                              \
      .Attr<int64_t>("groups")                                                 \
      .Attr<bool>("any_activations")

// (x, w) -> y;  (dy, w) -> dx;  (x, dy) -> dw.
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxOnednnConvForward, Handle<Pass::kForward>, CNNJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxOnednnConvInputGrad, Handle<Pass::kInputGrad>, CNNJAX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxOnednnConvWeightGrad, Handle<Pass::kWeightGrad>, CNNJAX_BIND);

// The implementation oneDNN chose for a configuration (for tests and benchmarks), or "" on error.
extern "C" int CnnjaxOnednnImplName(int pass, int bf16, int any_activations, const int64_t* shape10,
                                    const int64_t* conf8, char* out, int out_size) {
  // shape10: n h w c kh kw o g oh ow; conf8: strides[2] padding[4] dilation[2]
  Geometry geo{Pass(pass), bf16 ? memory::data_type::bf16 : memory::data_type::f32,
               shape10[0], shape10[1], shape10[2], shape10[3], shape10[4], shape10[5], shape10[6],
               shape10[7], shape10[8], shape10[9],
               {conf8[0], conf8[1]}, {conf8[6] - 1, conf8[7] - 1}, {conf8[2], conf8[4]}, {conf8[3], conf8[5]},
               any_activations != 0};
  try {
    std::string impl = GetPlan(geo).impl;
    std::snprintf(out, out_size, "%s", impl.c_str());
    return 0;
  } catch (const dnnl::error& e) {
    std::snprintf(out, out_size, "%s", e.what());
    return 1;
  }
}
