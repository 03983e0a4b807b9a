// Executor timings on this machine, against its FP32 FMA peak measured in the same run.
//
//   exec_bench --speed [--threads T] [--runs N] [--sram SIZE ...] [NET@HxW ...]
//                                       (default: the four nets below, T = 2, one plan at 32 MiB)
//   exec_bench [--benchmark_filter=REGEX]                        e.g. --benchmark_filter='mobilenet_v2'
//
// --speed: per net, the best layer-by-layer oneDNN reference (direct convolution, layouts measured)
// and the fused row-streaming executor (plan at the L3 size, or one fused line per --sram: on a
// machine whose L3 other tenants share, a plan for a few MiB may run faster than the L3's own,
// at more main-memory traffic), and for mobilenet_v2 also oneDNN's
// own fusion of each 1x1 convolution with the depthwise convolution after it (the `append_dw`
// post-op, blocked layout), all compiled for T threads and run interleaved in one process (the
// order rotates every round, so that none always finds the caches warm from another). Printed per
// executor: min and median ms, reference/executor at both (>= 1: as fast as the reference), GFLOP/s
// at the minimum and its share of the T-thread FMA peak, peak activation memory, and the max
// relative error against the reference. bench/speed.sh adds PyTorch's line (bench/pytorch_bench.py).
//
// Google Benchmark mode: the reference per zoo net, against the FMA peak and against the oneDNN
// times DESIGN.md lists for the 2-vCPU Zen 4 machine kind (design_ratio = DESIGN's time / our min).
//
// OpenMP's wait policy decides the reference's speed on nets of many small primitives: with
// OMP_WAIT_POLICY=passive oneDNN's second thread sleeps after every primitive and is woken for the
// next (mobilenet_v2 224x224: 7.7-8.8 ms against 5.8-6.0 ms active or unset, the same binary), while
// the fused executor, whose threads wait on each other with their own spin-then-yield, is about the
// same either way. Compare the executors unset or active, which is the reference's best; passive only
// protects other work sharing the cores (a partner thread that is descheduled is spun for).
#include "occam/exec.hpp"

#include "occam/error.hpp"
#include "occam/units.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <immintrin.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using occam::ActivationLayout;
using occam::ConvAlgorithm;

// FP32 FMA throughput of `threads` threads: independent fused multiply-add chains (enough to cover
// the FMA latency times the FMA units) on the widest vectors the build targets. Written with
// intrinsics: in ISO C++ mode the compiler may not contract a * b + c into one FMA.
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
Vec splat(float x) { return _mm512_set1_ps(x); }
float lane0(Vec v) { return _mm512_cvtss_f32(v); }
#else
using Vec = __m256;
constexpr int kLanes = 8;
Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
Vec splat(float x) { return _mm256_set1_ps(x); }
float lane0(Vec v) { return _mm256_cvtss_f32(v); }
#endif

double fma_peak_gflops(int threads) {
  constexpr int kChains = 10;
  constexpr int64_t kSteps = 10'000'000;
  const auto work = [](float seed, float* sink) {
    Vec acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = splat(seed * static_cast<float>(c + 1));
    const Vec a = splat(0.999999f), b = splat(1e-7f);
    for (int64_t i = 0; i < kSteps; ++i) {
#pragma GCC unroll 10
      for (int c = 0; c < kChains; ++c) acc[c] = fma(acc[c], a, b);
    }
    float sum = 0;
    for (const Vec& v : acc) sum += lane0(v);
    *sink = sum;
  };
  std::vector<float> sinks(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back(work, 1.0f + static_cast<float>(t), &sinks[static_cast<size_t>(t)]);
  for (std::thread& t : pool) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  benchmark::DoNotOptimize(sinks.data());
  return 2.0 * kLanes * kChains * static_cast<double>(kSteps) * threads / seconds / 1e9;
}

// Best of several short trials: other tenants' load only ever lowers a trial.
double machine_peak_gflops(int threads) {
  static std::map<int, double> peaks;
  if (const auto found = peaks.find(threads); found != peaks.end()) return found->second;
  double best = 0;
  for (int trial = 0; trial < 10; ++trial) best = std::max(best, fma_peak_gflops(threads));
  peaks[threads] = best;
  return best;
}

int all_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

struct NetCase {
  const char* model;
  int64_t h, w;
  ConvAlgorithm algorithm;
  ActivationLayout layout;
  double design_ms;  // DESIGN.md's oneDNN reference time, 0 where it lists none
  int runs;
};

void run_reference(benchmark::State& state, const NetCase& c) {
  occam::ModelOptions options;
  options.resolution = occam::Resolution{c.h, c.w};
  options.with_weights = true;
  const occam::Graph graph = occam::zoo_model(c.model, options);
  const auto executor = occam::compile_reference(graph, {0, c.algorithm, c.layout});
  const std::vector<occam::HostTensor> inputs = {occam::random_input(graph.tensor(graph.inputs[0]).shape)};
  std::vector<occam::HostTensor> outputs;
  for (const occam::Shape& shape : executor->output_shapes()) outputs.emplace_back(shape);
  executor->run(inputs, outputs);  // warm-up: first touch of the arena, caches
  std::vector<double> ms;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    executor->run(inputs, outputs);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(seconds);
    ms.push_back(seconds * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  const double min_ms = ms.front();
  const double median_ms = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
  const double gflops = 2.0 * static_cast<double>(occam::total_macs(graph)) / (min_ms * 1e-3) / 1e9;
  state.counters["min_ms"] = min_ms;
  state.counters["median_ms"] = median_ms;
  state.counters["GFLOP/s"] = gflops;
  state.counters["peak_%"] = 100.0 * gflops / machine_peak_gflops(all_threads());
  state.counters["act_MiB"] = static_cast<double>(executor->memory().activation_peak_bytes()) / (1 << 20);
  if (c.design_ms > 0) state.counters["design_ratio"] = c.design_ms / min_ms;
  state.SetLabel(executor->describe());
}

constexpr auto kDirect = ConvAlgorithm::Direct;
constexpr auto kWinograd = ConvAlgorithm::Winograd;
constexpr auto kMeasure = ActivationLayout::Measure;

const NetCase kCases[] = {
    {"mobilenet_v2", 224, 224, kDirect, kMeasure, 3.44, 30},
    {"mobilenet_v2", 224, 224, kDirect, ActivationLayout::Any, 3.52, 30},
    {"mobilenet_v2", 224, 224, kDirect, ActivationLayout::Blocked, 3.44, 30},
    {"mobilenet_v2", 1024, 1024, kDirect, kMeasure, 73.7, 8},
    {"mobilenet_v2", 1024, 1024, kDirect, ActivationLayout::Any, 89.4, 8},
    {"mobilenet_v2", 1024, 1024, kDirect, ActivationLayout::Blocked, 73.7, 8},
    {"resnet18", 224, 224, kDirect, kMeasure, 15.8, 20},
    {"resnet18", 224, 224, kWinograd, kMeasure, 10.8, 20},
    {"resnet18", 1024, 1024, kDirect, kMeasure, 331, 3},
    {"resnet18", 1024, 1024, kWinograd, kMeasure, 165, 3},
    {"dncnn", 512, 512, kDirect, kMeasure, 1294, 3},
    {"dncnn", 512, 512, kWinograd, kMeasure, 509, 3},
    {"dncnn", 1080, 1920, kDirect, kMeasure, 10268, 2},
    {"dncnn", 1080, 1920, kWinograd, kMeasure, 3943, 2},
    {"resnet50", 224, 224, kDirect, kMeasure, 0, 10},
    {"googlenet", 224, 224, kDirect, kMeasure, 0, 10},
    {"alexnet", 224, 224, kDirect, kMeasure, 0, 10},
    {"vgg16", 224, 224, kDirect, kMeasure, 0, 3},
};

// ---------------------------------------------------------------------------------------------
// oneDNN's own 1x1 + depthwise fusion, for mobilenet_v2's ops (convolutions, residual adds, global
// average pool, the classifier): each 1x1 convolution whose only reader is a 3x3 depthwise
// convolution of stride 1 or 2 and padding 1 carries it as an `append_dw` post-op (activations as
// eltwise post-ops before and after it); a residual add is a binary post-op of the convolution
// producing its first operand. Layouts: whatever each primitive picks (format_tag::any), the
// previous primitive's output taken as is. Every tensor has its own buffer.
class AppendDwExecutor final : public occam::Executor {
public:
  AppendDwExecutor(const occam::Graph& graph, int threads);

  using Executor::run;
  void run(std::span<const occam::HostTensor> inputs, std::span<occam::HostTensor> outputs) override;
  const occam::MemoryAccount& memory() const override { return account_; }
  std::string describe() const override {
    return fmt::format("oneDNN {}.{}.{} layer by layer with append_dw: {} of {} depthwise convolutions fused ({})",
                       DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, DNNL_VERSION_PATCH, fused_, depthwise_, impl_);
  }
  std::span<const occam::Shape> input_shapes() const override { return {&input_shape_, 1}; }
  std::span<const occam::Shape> output_shapes() const override { return {&output_shape_, 1}; }

private:
  struct Call {
    dnnl::primitive primitive;
    std::unordered_map<int, dnnl::memory> args;
  };
  dnnl::memory buffer(const dnnl::memory::desc& md, const std::string& what);
  dnnl::memory weights(const dnnl::memory::desc& user, const float* data, const dnnl::memory::desc& md);

  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  int threads_;
  occam::MemoryAccount account_;
  std::vector<occam::Allocation> storage_;
  std::vector<Call> calls_;
  dnnl::memory input_, output_;
  occam::Shape input_shape_, output_shape_;
  int fused_ = 0, depthwise_ = 0;
  std::string impl_;
};

dnnl::memory AppendDwExecutor::buffer(const dnnl::memory::desc& md, const std::string& what) {
  storage_.push_back(account_.allocate(static_cast<int64_t>(md.get_size()), occam::MemoryUse::Activations, what));
  return {md, engine_, storage_.back().data()};
}

dnnl::memory AppendDwExecutor::weights(const dnnl::memory::desc& user, const float* data, const dnnl::memory::desc& md) {
  storage_.push_back(account_.allocate(static_cast<int64_t>(md.get_size()), occam::MemoryUse::Weights, "weights"));
  dnnl::memory dst(md, engine_, storage_.back().data());
  dnnl::memory src(user, engine_, const_cast<float*>(data));  // a reorder only reads its source
  dnnl::reorder(src, dst).execute(stream_, src, dst);
  stream_.wait();
  return dst;
}

AppendDwExecutor::AppendDwExecutor(const occam::Graph& graph, int threads) : threads_(threads) {
  using dnnl::memory;
  using Tag = memory::format_tag;
  constexpr auto f32 = memory::data_type::f32;
  constexpr auto inference = dnnl::prop_kind::forward_inference;
  omp_set_num_threads(threads_);  // oneDNN splits each primitive's work for the threads it sees now
  const auto dims = [](const occam::Shape& s) { return memory::dims{s.n, s.c, s.h, s.w}; };
  const auto any = [&](const occam::Shape& s) { return memory::desc(dims(s), f32, Tag::any); };
  const auto eltwise = [](dnnl::post_ops& ops, const occam::Activation& a) {
    if (a.kind == occam::ActKind::Relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (a.kind == occam::ActKind::Clip) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, a.lo, a.hi);
    if (a.kind != occam::ActKind::None && a.kind != occam::ActKind::Relu && a.kind != occam::ActKind::Clip) {
      occam::fail("append_dw executor: activation {} is not supported", occam::to_string(a.kind));
    }
  };
  input_shape_ = graph.tensor(graph.inputs[0]).shape;
  output_shape_ = graph.tensor(graph.outputs[0]).shape;
  std::map<occam::TensorId, memory> value;
  input_ = memory({dims(input_shape_), f32, Tag::nchw}, engine_, DNNL_MEMORY_NONE);
  value[graph.inputs[0]] = input_;
  std::set<occam::OpId> absorbed;  // depthwise convolutions and adds done as post-ops
  for (const occam::Op& op : graph.ops) depthwise_ += op.kind == occam::OpKind::Conv && op.groups > 1;
  for (occam::OpId id = 0; id < static_cast<occam::OpId>(graph.ops.size()); ++id) {
    if (absorbed.count(id) != 0) continue;
    const occam::Op& op = graph.op(id);
    const occam::Shape out = graph.output_of(op).shape;
    const memory src = value.at(op.inputs[0]);
    const auto only_reader = [&](occam::TensorId t) -> const occam::Op* {
      const auto& readers = graph.tensor(t).consumers;
      return readers.size() == 1 ? &graph.op(readers[0]) : nullptr;
    };
    Call call;
    switch (op.kind) {
      case occam::OpKind::Conv: {
        const occam::Window& w = op.window;
        const occam::Shape in = graph.input_of(op).shape;
        // A depthwise 3x3 (stride 1 or 2, padding 1) right after this 1x1 convolution.
        const occam::Op* dw = only_reader(op.output);
        const bool fuse = op.groups == 1 && w.kernel_h == 1 && w.kernel_w == 1 && dw != nullptr &&
                          dw->kind == occam::OpKind::Conv && dw->groups == out.c && dw->window.kernel_h == 3 &&
                          dw->window.kernel_w == 3 && dw->window.stride_h == dw->window.stride_w &&
                          dw->window.stride_h <= 2 && dw->window.pad_top == 1 && dw->window.pad_left == 1 && dw->bias;
        const occam::Op& last = fuse ? *dw : op;
        // The residual add reading the last convolution's output, as a binary post-op.
        const occam::Op* add = only_reader(last.output);
        const bool residual = add != nullptr && add->kind == occam::OpKind::Add && add->inputs.size() == 2 &&
                              add->activation.kind == occam::ActKind::None &&
                              graph.tensor(add->inputs[0]).shape == graph.tensor(add->inputs[1]).shape;
        dnnl::post_ops ops;
        eltwise(ops, op.activation);
        if (fuse) {
          ops.append_dw(f32, f32, f32, 3, dw->window.stride_h, 1, 0, {});
          eltwise(ops, dw->activation);
        }
        memory other;
        if (residual) {
          other = value.at(add->inputs[0] == last.output ? add->inputs[1] : add->inputs[0]);
          ops.append_binary(dnnl::algorithm::binary_add, other.get_desc());
        }
        dnnl::primitive_attr attr;
        attr.set_post_ops(ops);
        const memory::dims weight_dims = op.groups > 1 ? memory::dims{op.groups, out.c / op.groups, in.c / op.groups, w.kernel_h, w.kernel_w}
                                                       : memory::dims{out.c, in.c, w.kernel_h, w.kernel_w};
        const memory::desc weight_user(weight_dims, f32, op.groups > 1 ? Tag::goihw : Tag::oihw);
        const memory::desc bias_md({out.c}, f32, Tag::x);
        const dnnl::convolution_forward::desc desc(
            inference, dnnl::algorithm::convolution_direct, src.get_desc(), memory::desc(weight_dims, f32, Tag::any), bias_md,
            any(out), {w.stride_h, w.stride_w}, {w.dilation_h - 1, w.dilation_w - 1}, {w.pad_top, w.pad_left},
            {w.pad_bottom, w.pad_right});
        const dnnl::convolution_forward::primitive_desc pd(desc, attr, engine_);
        if (fuse) {
          ++fused_;
          impl_ = pd.impl_info_str();
        }
        std::vector<float> zero_bias;
        const float* bias = op.bias ? op.bias->data() : (zero_bias.assign(static_cast<size_t>(out.c), 0.0f), zero_bias.data());
        call.args[DNNL_ARG_SRC] = src;
        call.args[DNNL_ARG_WEIGHTS] = weights(weight_user, op.weight->data(), pd.weights_desc());
        call.args[DNNL_ARG_BIAS] = weights(bias_md, bias, pd.bias_desc());
        if (fuse) {
          const occam::Shape dw_out = graph.output_of(*dw).shape;
          const int dw_arg = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS, dw_bias = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS;
          call.args[dw_arg] = weights({{dw_out.c, 1, 1, 3, 3}, f32, Tag::goihw}, dw->weight->data(),
                                      pd.query_md(dnnl::query::exec_arg_md, dw_arg));
          call.args[dw_bias] = weights({{dw_out.c}, f32, Tag::x}, dw->bias->data(), pd.query_md(dnnl::query::exec_arg_md, dw_bias));
          absorbed.insert(graph.tensor(op.output).consumers[0]);
        }
        if (residual) {
          const int index = static_cast<int>(ops.len()) - 1;
          call.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(index) | DNNL_ARG_SRC_1] = other;
          absorbed.insert(graph.tensor(last.output).consumers[0]);
        }
        call.args[DNNL_ARG_DST] = buffer(pd.dst_desc(), last.name);
        value[residual ? add->output : last.output] = call.args[DNNL_ARG_DST];
        call.primitive = dnnl::convolution_forward(pd);
        break;
      }
      case occam::OpKind::GlobalAvgPool: {
        const occam::Shape in = graph.input_of(op).shape;
        const dnnl::pooling_v2_forward::primitive_desc pd(
            {inference, dnnl::algorithm::pooling_avg_exclude_padding, src.get_desc(), any(out), {1, 1}, {in.h, in.w}, {0, 0}, {0, 0}, {0, 0}},
            engine_);
        call.args[DNNL_ARG_SRC] = src;
        call.args[DNNL_ARG_DST] = buffer(pd.dst_desc(), op.name);
        value[op.output] = call.args[DNNL_ARG_DST];
        call.primitive = dnnl::pooling_v2_forward(pd);
        break;
      }
      case occam::OpKind::Flatten:
      case occam::OpKind::Identity:
        if (op.activation.kind != occam::ActKind::None) occam::fail("append_dw executor: {} has an activation", op.name);
        value[op.output] = src;  // the classifier reads the pooled (1, C, 1, 1) tensor as is
        continue;
      case occam::OpKind::Gemm: {
        const occam::Shape in = graph.input_of(op).shape;
        const memory::dims weight_dims = {out.c, in.c, in.h, in.w};
        const memory::desc dst_md({1, out.c}, f32, Tag::nc);
        const dnnl::inner_product_forward::primitive_desc pd(
            {inference, src.get_desc(), memory::desc(weight_dims, f32, Tag::any), memory::desc({out.c}, f32, Tag::x), dst_md},
            engine_);
        call.args[DNNL_ARG_SRC] = src;
        call.args[DNNL_ARG_WEIGHTS] = weights({weight_dims, f32, Tag::oihw}, op.weight->data(), pd.weights_desc());
        call.args[DNNL_ARG_BIAS] = weights({{out.c}, f32, Tag::x}, op.bias->data(), pd.bias_desc());
        output_ = memory(dst_md, engine_, DNNL_MEMORY_NONE);
        call.args[DNNL_ARG_DST] = output_;
        value[op.output] = output_;
        call.primitive = dnnl::inner_product_forward(pd);
        break;
      }
      default: occam::fail("append_dw executor: {} ({}) is not supported", op.name, occam::to_string(op.kind));
    }
    calls_.push_back(std::move(call));
  }
  if (value.at(graph.outputs[0]).get() != output_.get()) occam::fail("append_dw executor: the output is not the classifier's");
}

void AppendDwExecutor::run(std::span<const occam::HostTensor> inputs, std::span<occam::HostTensor> outputs) {
  omp_set_num_threads(threads_);
  input_.set_data_handle(const_cast<float*>(inputs[0].values.data()));  // read only
  output_.set_data_handle(outputs[0].values.data());
  for (Call& call : calls_) call.primitive.execute(stream_, call.args);
  stream_.wait();
}

// ---------------------------------------------------------------------------------------------
// --speed

struct SpeedCase {
  std::string model;
  int64_t h, w;
  int runs;
};

double median_of(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
}

constexpr int64_t kL3 = 32 << 20;  // the last-level cache of the machines DESIGN.md describes

void speed(const SpeedCase& c, int threads, double peak, const std::vector<int64_t>& capacities) {
  occam::ModelOptions options;
  options.resolution = occam::Resolution{c.h, c.w};
  options.with_weights = true;
  const occam::Graph graph = occam::zoo_model(c.model, options);
  struct Entry {
    std::string name;
    std::unique_ptr<occam::Executor> executor;
    std::vector<occam::HostTensor> outputs;
    std::vector<double> ms;
  };
  std::vector<Entry> entries;
  entries.push_back({"reference", occam::compile_reference(graph, {threads, ConvAlgorithm::Direct, ActivationLayout::Measure}), {}, {}});
  occam::FusedOptions fused_options;
  fused_options.threads = threads;
  std::vector<std::string> plans;
  for (const int64_t capacity : capacities) {
    const occam::Plan plan = occam::plan_for_execution(graph, capacity);
    std::string size = occam::format_bytes(static_cast<double>(capacity));
    size.erase(std::remove(size.begin(), size.end(), ' '), size.end());
    const std::string name = capacities.size() == 1 ? "fused" : "fused@" + size;
    entries.push_back({name, occam::compile_fused(graph, plan, fused_options), {}, {}});
    plans.push_back(fmt::format("{}: {} partition(s) at {} per partition", name, plan.partitions.size(), size));
  }
  if (c.model == "mobilenet_v2") entries.push_back({"append_dw", std::make_unique<AppendDwExecutor>(graph, threads), {}, {}});
  const std::vector<occam::HostTensor> inputs = {occam::random_input(graph.tensor(graph.inputs[0]).shape)};
  for (Entry& e : entries) {
    for (const occam::Shape& shape : e.executor->output_shapes()) e.outputs.emplace_back(shape);
    e.executor->run(inputs, e.outputs);  // warm-up: first touch of every buffer
  }
  for (int round = 0; round < c.runs; ++round) {
    for (size_t k = 0; k < entries.size(); ++k) {
      Entry& e = entries[(k + static_cast<size_t>(round)) % entries.size()];
      const auto start = std::chrono::steady_clock::now();
      e.executor->run(inputs, e.outputs);
      e.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
  }
  const double gflop = 2.0 * static_cast<double>(occam::total_macs(graph)) / 1e9;
  const double ref_min = *std::min_element(entries[0].ms.begin(), entries[0].ms.end());
  const double ref_median = median_of(entries[0].ms);
  fmt::print("{} {}x{}, {} threads, {} rounds, {:.2f} GFLOP per image\n", c.model, c.h, c.w, threads, c.runs, gflop);
  for (const Entry& e : entries) {
    const double lo = *std::min_element(e.ms.begin(), e.ms.end());
    const double med = median_of(e.ms);
    double error = 0;
    for (size_t i = 0; i < e.outputs.size(); ++i) error = std::max(error, occam::max_relative_error(e.outputs[i], entries[0].outputs[i]));
    fmt::print("  {:<16} min {:9.2f} ms  median {:9.2f} ms  ref/this {:.3f} (min) {:.3f} (median)  {:6.1f} GFLOP/s = "
               "{:4.1f}% of peak  activations {:8.2f} MiB  max rel err {:.1e}\n",
               e.name, lo, med, ref_min / lo, ref_median / med, gflop / (lo * 1e-3), 100.0 * gflop / (lo * 1e-3) / peak,
               static_cast<double>(e.executor->memory().activation_peak_bytes()) / (1 << 20), error);
  }
  for (const Entry& e : entries) fmt::print("  {:<16} {}\n", e.name, e.executor->describe());
  for (const std::string& line : plans) fmt::print("  plan {}\n", line);
}

int speed_main(int argc, char** argv) {
  int threads = 2, runs = 10;
  std::vector<SpeedCase> cases;
  std::vector<int64_t> capacities;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (arg == "--runs" && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else if (arg == "--sram" && i + 1 < argc) {
      try {
        capacities.push_back(occam::parse_bytes(argv[++i], "--sram"));
      } catch (const std::exception& e) {
        fmt::print(stderr, "exec_bench --speed: {}\n", e.what());
        return 1;
      }
    } else if (const auto at = arg.find('@'); at != std::string::npos) {
      const occam::Resolution r = occam::parse_resolution(arg.substr(at + 1));
      cases.push_back({arg.substr(0, at), r.h, r.w, 0});
    } else {
      fmt::print(stderr, "exec_bench --speed: unknown argument {}\n", arg);
      return 1;
    }
  }
  if (cases.empty()) {
    cases = {{"resnet18", 224, 224, 0}, {"mobilenet_v2", 224, 224, 0}, {"dncnn", 512, 512, 0}, {"mobilenet_v2", 1024, 1024, 0}};
  }
  if (capacities.empty()) capacities.push_back(kL3);
  const double peak = machine_peak_gflops(threads);
  fmt::print("FP32 FMA peak measured now (best of 10): {:.1f} GFLOP/s on 1 thread, {:.1f} on {}\n", machine_peak_gflops(1), peak,
             threads);
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  fmt::print("OMP_WAIT_POLICY={}{}\n", policy != nullptr ? policy : "(unset: libgomp spins, then sleeps)",
             policy != nullptr && std::string_view(policy) == "passive"
                 ? " - the reference pays a thread wake-up per primitive: not its best (see the header of exec_bench.cpp)"
                 : "");
  for (SpeedCase& c : cases) {
    c.runs = std::max(runs, 10);
    try {
      speed(c, threads, peak, capacities);
    } catch (const std::exception& e) {
      fmt::print("{} {}x{}: {}\n", c.model, c.h, c.w, e.what());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--speed") return speed_main(argc, argv);
  for (const NetCase& c : kCases) {
    const std::string name = fmt::format("reference/{}/{}x{}/{}/{}", c.model, c.h, c.w, occam::to_string(c.algorithm),
                                         occam::to_string(c.layout));
    benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& state) { run_reference(state, c); })
        ->Iterations(c.runs)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fmt::print("FP32 FMA peak measured now: {:.1f} GFLOP/s on {} threads\n", machine_peak_gflops(all_threads()), all_threads());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
