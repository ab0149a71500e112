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
// (pass, shape, configuration) and kept in a least-recently-used cache of 256 plans
// (CNNJAX_ONEDNN_PLAN_CACHE overrides the cap). oneDNN's scratchpad is user-managed for every
// primitive, reorders included, so one plan can run from several XLA threads at once; per-thread
// buffers hold the scratchpad and the reordered operands and are reused between calls, those
// above 64 MiB freed after each call. Every failure (a oneDNN error, a C++ exception, an
// allocation that fails) becomes an FFI error of one line, never an abort. A plan that falls
// back to oneDNN's reference implementation ("ref:...") logs one line on stderr.
//
// Threads: this build of oneDNN runs on GNU OpenMP. A call runs an OpenMP team started from the
// XLA thread that calls the handler, which waits; XLA's own thread pool is not used by oneDNN.
// The team has as many threads as the cores the process was given (its CPU affinity, or
// SLURM_CPUS_PER_TASK; the loader passes the count, see build.py) unless OMP_NUM_THREADS is set.

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
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
  size_t scratch_bytes;   // the reorder's scratchpad
};

struct Plan {
  dnnl::primitive prim;
  Operand inputs[2];
  Operand output;
  size_t scratch_bytes;  // the largest scratchpad of the convolution and its reorders
  std::string impl;
};

// Every primitive, reorders included, takes a user-managed scratchpad: with oneDNN's default
// (library) scratchpad a primitive may only run on the thread that created it, and XLA calls a
// cached plan from any of its threads, several at once.
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

Operand MakeOperand(int arg, const memory::desc& user, const memory::desc& prim, bool is_output) {
  Operand op{arg, user, prim, dnnl::reorder(), user != prim, 0};
  if (op.needs_reorder) {
    auto pd = is_output ? dnnl::reorder::primitive_desc(Engine(), prim, Engine(), user, UserScratchpad())
                        : dnnl::reorder::primitive_desc(Engine(), user, Engine(), prim, UserScratchpad());
    op.reorder = dnnl::reorder(pd);
    op.scratch_bytes = pd.scratchpad_desc().get_size();
  }
  return op;
}

// Test hook: CNNJAX_ONEDNN_IMPL=<prefix> makes a new plan take oneDNN's first implementation
// whose name starts with <prefix> (e.g. "ref"), where it has one, instead of its best.
template <typename PrimitiveDesc>
void PreferImplementation(PrimitiveDesc& pd) {
  const char* env = std::getenv("CNNJAX_ONEDNN_IMPL");
  if (env == nullptr || *env == 0) return;
  while (std::string(pd.impl_info_str()).rfind(env, 0) != 0 && pd.next_impl()) {
  }
}

// `any_activations`: oneDNN chooses the activations' format too (else they stay NHWC).
std::unique_ptr<Plan> MakePlan(const Geometry& geo, bool any_activations) {
  const dnnl::primitive_attr attr = UserScratchpad();
  const auto algo = dnnl::algorithm::convolution_auto;
  const memory::desc src = geo.Src(any_activations), dst = geo.Dst(any_activations);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, algo, src, geo.Weights(true), dst,
      geo.strides, geo.dilations, geo.pad_lo, geo.pad_hi, attr);
  auto plan = std::make_unique<Plan>();
  if (geo.pass == Pass::kForward) {
    PreferImplementation(fwd);
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
    PreferImplementation(pd);
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
    PreferImplementation(pd);
    plan->prim = dnnl::convolution_backward_weights(pd);
    plan->inputs[0] = MakeOperand(DNNL_ARG_SRC, geo.Src(false), pd.src_desc(), false);
    plan->inputs[1] = MakeOperand(DNNL_ARG_DIFF_DST, geo.Dst(false), pd.diff_dst_desc(), false);
    plan->output = MakeOperand(DNNL_ARG_DIFF_WEIGHTS, geo.Weights(false), pd.diff_weights_desc(), true);
    plan->scratch_bytes = pd.scratchpad_desc().get_size();
    plan->impl = pd.impl_info_str();
  }
  for (const Operand* op : {&plan->inputs[0], &plan->inputs[1], &plan->output}) {
    plan->scratch_bytes = std::max(plan->scratch_bytes, op->scratch_bytes);
  }
  return plan;
}

// One line on stderr, once per configuration and process, when oneDNN has nothing but its
// reference implementation (a plain loop, often 10-100x slower) for a convolution.
void LogReference(const Geometry& geo, const std::string& impl) {
  static std::mutex mutex;
  static std::set<std::string> logged;
  std::lock_guard<std::mutex> lock(mutex);
  if (!logged.insert(geo.Key()).second) return;
  static const char* kPass[] = {"forward", "input_grad", "weight_grad"};
  std::fprintf(stderr,
               "cnnjax.kernels.onednn: oneDNN runs the %s pass of the %s convolution of input "
               "(%lld, %lld, %lld, %lld), kernel (%lld, %lld, %lld, %lld), strides (%lld, %lld), "
               "dilation (%lld, %lld), groups %lld on its reference implementation %s (slow)\n",
               kPass[int(geo.pass)], geo.type == memory::data_type::bf16 ? "bfloat16" : "float32",
               (long long)geo.n, (long long)geo.h, (long long)geo.w, (long long)geo.c,
               (long long)geo.kh, (long long)geo.kw, (long long)(geo.c / geo.g), (long long)geo.o,
               (long long)geo.strides[0], (long long)geo.strides[1],
               (long long)geo.dilations[0] + 1, (long long)geo.dilations[1] + 1, (long long)geo.g,
               impl.c_str());
}

std::shared_ptr<const Plan> MakePlan(const Geometry& geo) {
  std::unique_ptr<Plan> plan = MakePlan(geo, geo.any_activations);
  if (!geo.any_activations && plan->impl.rfind("ref", 0) == 0) plan = MakePlan(geo, true);
  if (plan->impl.rfind("ref", 0) == 0) LogReference(geo, plan->impl);
  return std::shared_ptr<const Plan>(std::move(plan));
}

// The plan cache: least recently used first out, at most PlanCapacity() plans (each a
// convolution primitive and up to three reorders, with their JIT-compiled code: tens of KiB to a
// few MiB). A caller holds its plan by shared_ptr, so an eviction never frees a plan
// that another thread is running.
size_t PlanCapacity() {
  static const size_t capacity = [] {
    const char* env = std::getenv("CNNJAX_ONEDNN_PLAN_CACHE");
    const long long v = env ? std::atoll(env) : 0;
    return v > 0 ? size_t(v) : size_t(256);
  }();
  return capacity;
}

struct PlanCache {
  using Entry = std::pair<std::string, std::shared_ptr<const Plan>>;
  std::mutex mutex;
  std::list<Entry> order;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index;
};

PlanCache& Plans() {
  static PlanCache cache;
  return cache;
}

size_t PlanCount() {
  PlanCache& cache = Plans();
  std::lock_guard<std::mutex> lock(cache.mutex);
  return cache.order.size();
}

std::shared_ptr<const Plan> GetPlan(const Geometry& geo) {
  // oneDNN's own cache would keep up to 1024 primitives alive after their plans are evicted:
  // sized to the plans' primitives (a convolution and up to three reorders each) unless the
  // user set it.
  static const bool sized = [] {
    if (!std::getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY") &&
        !std::getenv("DNNL_PRIMITIVE_CACHE_CAPACITY")) {
      dnnl::set_primitive_cache_capacity(int(std::min<size_t>(4 * PlanCapacity(), 1 << 20)));
    }
    return true;
  }();
  (void)sized;
  PlanCache& cache = Plans();
  std::list<PlanCache::Entry>& order = cache.order;
  auto& index = cache.index;
  const std::string key = geo.Key();
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto it = index.find(key);
  if (it != index.end()) {
    order.splice(order.begin(), order, it->second);
    return it->second->second;
  }
  std::shared_ptr<const Plan> plan = MakePlan(geo);
  order.emplace_front(key, plan);
  index[key] = order.begin();
  while (order.size() > PlanCapacity()) {
    index.erase(order.back().first);
    order.pop_back();
  }
  return plan;
}

// Test hook: CNNJAX_ONEDNN_INJECT_FAILURE=exception | bad_alloc | null makes every call fail
// that way (a C++ exception, an allocation that throws, an allocation that returns null), to
// check that each becomes an FFI error.
std::string InjectedFailure() {
  const char* env = std::getenv("CNNJAX_ONEDNN_INJECT_FAILURE");
  return env ? env : "";
}

// A per-thread, 64-byte aligned buffer, reused between calls; Trim() frees one larger than
// kKeepBytes after the call, so a thread holds at most 4 x kKeepBytes between calls however
// large the convolutions it ran.
constexpr size_t kKeepBytes = size_t(64) << 20;

struct Buffer {
  void* data = nullptr;
  size_t size = 0;
  void* Get(size_t bytes, bool inject_null) {
    if (bytes > size || inject_null) {  // the injected failure: as if this call had to allocate
      std::free(data);
      data = nullptr;
      size = 0;
      const size_t rounded = (bytes + 63) / 64 * 64;
      void* p = inject_null ? nullptr : std::aligned_alloc(64, rounded);
      if (p == nullptr) {
        throw std::runtime_error("cannot allocate " + std::to_string(rounded) + " bytes");
      }
      data = p;
      size = rounded;
    }
    return data;
  }
  void Trim() {
    if (size > kKeepBytes) {
      std::free(data);
      data = nullptr;
      size = 0;
    }
  }
  ~Buffer() { std::free(data); }
};

// OpenMP team size for oneDNN: set by the loader (CnnjaxOnednnSetThreads) to the cores this
// process was given; 0 leaves OpenMP's default. The ICV is per thread, and XLA calls from
// several threads of its own, so every call sets it on its thread.
std::atomic<int> g_threads{0};

void Run(const Geometry& geo, void* in0, void* in1, void* out) {
  const std::string inject = InjectedFailure();
  if (inject == "exception") throw std::runtime_error("injected failure");
  if (inject == "bad_alloc") throw std::bad_alloc();
  const int threads = g_threads.load();
  if (threads > 0 && omp_get_max_threads() != threads) omp_set_num_threads(threads);
  const std::shared_ptr<const Plan> plan = GetPlan(geo);
  thread_local Buffer buffers[4];  // reordered in0, in1, out; scratchpad
  thread_local dnnl::stream stream(Engine());
  struct Trimmer {  // on every exit, exceptions included
    ~Trimmer() { for (Buffer& b : buffers) b.Trim(); }
  } trimmer;
  const bool null = inject == "null";
  std::unordered_map<int, memory> args;
  memory scratch;
  if (plan->scratch_bytes) {
    scratch = memory(memory::desc({int64_t(plan->scratch_bytes)}, memory::data_type::u8,
                                  memory::format_tag::x),
                     Engine(), buffers[3].Get(plan->scratch_bytes, null));
  }
  auto reorder = [&](const Operand& op, const memory& from, const memory& to) {
    std::unordered_map<int, memory> r{{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (op.scratch_bytes) r.emplace(DNNL_ARG_SCRATCHPAD, scratch);
    op.reorder.execute(stream, r);
  };
  void* user[2] = {in0, in1};
  for (int i = 0; i < 2; ++i) {
    const Operand& op = plan->inputs[i];
    memory user_mem(op.user, Engine(), user[i]);
    if (op.needs_reorder) {
      memory prim_mem(op.prim, Engine(), buffers[i].Get(op.prim.get_size(), null));
      reorder(op, user_mem, prim_mem);
      args.emplace(op.arg, prim_mem);
    } else {
      args.emplace(op.arg, user_mem);
    }
  }
  const Operand& res = plan->output;
  memory out_mem(res.user, Engine(), out);
  memory prim_out = res.needs_reorder
                        ? memory(res.prim, Engine(), buffers[2].Get(res.prim.get_size(), null))
                        : out_mem;
  args.emplace(res.arg, prim_out);
  if (plan->scratch_bytes) args.emplace(DNNL_ARG_SCRATCHPAD, scratch);
  plan->prim.execute(stream, args);
  if (res.needs_reorder) reorder(res, prim_out, out_mem);
  stream.wait();
}

// Runs a pass; "" on success, else the reason on one line. No exception leaves this function.
std::string Execute(const Geometry& geo, void* in0, void* in1, void* out) {
  std::string why;
  try {
    Run(geo, in0, in1, out);
    return "";
  } catch (const dnnl::error& e) {
    why = e.what();
  } catch (const std::bad_alloc&) {
    why = "out of memory";
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "unknown C++ exception";
  }
  for (char& ch : why) if (ch == '\n' || ch == '\r') ch = ' ';
  return "oneDNN convolution failed: " + why;
}

// shape10: n h w c kh kw o g oh ow; conf8: strides[2] padding[4] dilation[2].
Geometry MakeGeometry(Pass pass, memory::data_type type, const int64_t* shape10,
                      const int64_t* conf8, bool any_activations) {
  return Geometry{pass, type,
                  shape10[0], shape10[1], shape10[2], shape10[3], shape10[4], shape10[5],
                  shape10[6], shape10[7], shape10[8], shape10[9],
                  {conf8[0], conf8[1]}, {conf8[6] - 1, conf8[7] - 1},
                  {conf8[2], conf8[4]}, {conf8[3], conf8[5]}, any_activations};
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
  const int64_t shape10[10] = {input_shape[0], input_shape[1], input_shape[2], input_shape[3],
                               kernel_shape[0], kernel_shape[1], kernel_shape[3], groups,
                               output_shape[1], output_shape[2]};
  const int64_t conf8[8] = {strides[0], strides[1], padding[0], padding[1], padding[2],
                            padding[3], dilation[0], dilation[1]};
  const std::string why = Execute(MakeGeometry(pass, type, shape10, conf8, any_activations),
                                  a.untyped_data(), b.untyped_data(), out->untyped_data());
  return why.empty() ? ffi::Error::Success() : ffi::Error::Internal(why);
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

// The implementation oneDNN chose for a configuration (for tests and benchmarks): 0, or 1 with
// the reason in `out`.
extern "C" int CnnjaxOnednnImplName(int pass, int bf16, int any_activations, const int64_t* shape10,
                                    const int64_t* conf8, char* out, int out_size) {
  std::string text;
  int rc = 0;
  try {
    text = GetPlan(MakeGeometry(Pass(pass), bf16 ? memory::data_type::bf16 : memory::data_type::f32,
                                shape10, conf8, any_activations != 0))->impl;
  } catch (const std::exception& e) {
    text = e.what();
    rc = 1;
  }
  std::snprintf(out, out_size, "%s", text.c_str());
  return rc;
}

// Runs one pass on host buffers outside XLA (the tests' way to call oneDNN from many threads or
// over many shapes without compiling a program each time): 0, or 1 with the reason in `err`.
extern "C" int CnnjaxOnednnRun(int pass, int bf16, int any_activations, const int64_t* shape10,
                               const int64_t* conf8, void* a, void* b, void* out, char* err,
                               int err_size) {
  const std::string why = Execute(
      MakeGeometry(Pass(pass), bf16 ? memory::data_type::bf16 : memory::data_type::f32, shape10,
                   conf8, any_activations != 0), a, b, out);
  std::snprintf(err, err_size, "%s", why.c_str());
  return why.empty() ? 0 : 1;
}

// The team size the loader set (0: OpenMP's default), for the batch-norm passes (norm_act.cc).
int CnnjaxTeamSize() { return g_threads.load(); }

// The OpenMP team size of every later call (the loader passes the cores this process was
// given); `threads` <= 0 leaves OpenMP's default.
extern "C" void CnnjaxOnednnSetThreads(int threads) { g_threads.store(threads); }

// The OpenMP team size on the calling thread now: after a call, the one that call used (for
// tests).
extern "C" int CnnjaxOnednnThreads() { return omp_get_max_threads(); }

// How many plans the cache holds (for tests).
extern "C" int CnnjaxOnednnCachedPlans() { return int(PlanCount()); }
