// The graph IR: what a CNN computes, as a DAG of tensors and ops in topological order.
//
// A Graph is built once (from the model zoo or an ONNX file), normalised (BatchNorm folded into
// the preceding convolution, activations fused into their producer, Dropout dropped) and then only
// read: analyses, plans and executors refer to ops and tensors by index and never mutate it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace occam {

using TensorId = int;
using OpId = int;

// Activations are NCHW; fully-connected outputs are (N, C, 1, 1).
struct Shape {
  int64_t n = 1, c = 1, h = 1, w = 1;

  int64_t elements() const { return n * c * h * w; }
  int64_t image_elements() const { return c * h * w; }
  std::string str() const;
  bool operator==(const Shape&) const = default;
};

enum class OpKind : uint8_t {
  Conv,
  MaxPool,
  AvgPool,
  GlobalAvgPool,
  AdaptiveAvgPool,  // PyTorch's adaptive average pooling to a fixed output size
  Gemm,       // fully connected; a 4-D input is flattened implicitly (C, H, W order)
  BatchNorm,  // only where it could not be folded into a convolution: y = x * scale + shift
  Add,
  Sub,
  Mul,
  Concat,  // along channels
  Slice,   // a contiguous range of channels: [channel_offset, channel_offset + out_channels)
  ChannelShuffle,  // ShuffleNet's: channels as a groups x (C / groups) matrix, transposed
  Activation,
  Flatten,
  Softmax,
  Identity,  // Dropout and friends; removed by normalize()
};
std::string_view to_string(OpKind kind);

enum class ActKind : uint8_t { None, Relu, Clip, Sigmoid, HardSigmoid, HardSwish, Tanh, LeakyRelu, Swish };
std::string_view to_string(ActKind kind);

// An elementwise activation. Clip uses [lo, hi] (ReLU6 = Clip 0..6); HardSigmoid uses
// alpha = lo, beta = hi; LeakyRelu uses alpha = lo.
struct Activation {
  ActKind kind = ActKind::None;
  float lo = 0.0f;
  float hi = 0.0f;

  static Activation relu() { return {ActKind::Relu}; }
  static Activation relu6() { return {ActKind::Clip, 0.0f, 6.0f}; }
  bool operator==(const Activation&) const = default;
};

// Sliding-window geometry of a convolution or pooling op.
struct Window {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int dilation_h = 1, dilation_w = 1;
  bool ceil_mode = false;

  int extent_h() const { return (kernel_h - 1) * dilation_h + 1; }
  int extent_w() const { return (kernel_w - 1) * dilation_w + 1; }
  static Window square(int kernel, int stride = 1, int pad = 0) {
    return {kernel, kernel, stride, stride, pad, pad, pad, pad, 1, 1, false};
  }
  bool operator==(const Window&) const = default;
};

struct Resolution {
  int64_t h = 224, w = 224;
  bool operator==(const Resolution&) const = default;
};

// Parameter data, shared between graph copies. Empty when a zoo model is built for planning only.
using Buffer = std::shared_ptr<const std::vector<float>>;

struct Op {
  std::string name;
  OpKind kind = OpKind::Identity;
  std::vector<TensorId> inputs;  // activations only; parameters live in weight/bias
  TensorId output = -1;

  Window window;  // Conv, MaxPool, AvgPool
  int64_t out_channels = 0;  // Conv: output channels; Gemm: output features; Slice: channels taken
  int64_t channel_offset = 0;  // Slice: the first input channel taken
  int groups = 1;  // Conv, ChannelShuffle
  Resolution pooled;  // AdaptiveAvgPool: output size
  bool count_include_pad = false;  // AvgPool
  bool has_bias = false;  // Conv, Gemm: the source op has its own bias
  bool folded_batchnorm = false;  // Conv: a BatchNorm was folded in (so a bias is stored)
  Activation activation;  // post-op; for kind == Activation, the op itself

  // Conv: [Cout, Cin/groups, kh, kw]; Gemm: [out, in]; BatchNorm: per-channel scale.
  Buffer weight;
  // Conv, Gemm: [Cout]; BatchNorm: per-channel shift.
  Buffer bias;
};

struct Tensor {
  std::string name;
  Shape shape;
  int elem_bytes = 4;
  OpId producer = -1;  // -1 for graph inputs
  std::vector<OpId> consumers;

  int64_t image_bytes() const { return shape.image_elements() * elem_bytes; }
};

struct Graph {
  std::string name;
  std::string source;  // zoo name or file path, for messages
  std::vector<Tensor> tensors;
  std::vector<Op> ops;  // topological order
  std::vector<TensorId> inputs;
  std::vector<TensorId> outputs;

  const Tensor& tensor(TensorId id) const { return tensors.at(static_cast<size_t>(id)); }
  const Op& op(OpId id) const { return ops.at(static_cast<size_t>(id)); }
  const Tensor& input_of(const Op& op, size_t i = 0) const { return tensor(op.inputs.at(i)); }
  const Tensor& output_of(const Op& op) const { return tensor(op.output); }
  bool is_output(TensorId id) const;
  bool has_weights() const;
};

// Output shape of `op` given its input shapes; throws an Error naming the op on mismatch.
Shape infer_shape(const Op& op, std::span<const Shape> inputs, std::string_view where);

// Builds a Graph op by op, inferring shapes as it goes, so that a shape error names the op that
// caused it. `where` (a file name or zoo name) prefixes every message.
class GraphBuilder {
public:
  GraphBuilder(std::string name, std::string where);

  TensorId input(std::string name, Shape shape);
  // Appends `op` (its output field is ignored) and returns the new output tensor.
  TensorId add(Op op, std::string output_name = "");
  void mark_output(TensorId tensor);
  const Shape& shape(TensorId tensor) const;
  // Validates, links consumers and normalises (see normalize()).
  Graph finish() &&;

private:
  Graph graph_;
};

// Folds BatchNorm into a preceding single-consumer Conv, fuses activations into a single-consumer
// producer, removes Identity ops and Flatten/Reshape feeding a Gemm, and compacts the tensor list.
Graph normalize(Graph graph);

// The ops [first, last] of `graph` as a graph of their own: tensors produced before `first` (or
// graph inputs) that the span reads become its inputs, in order of first use; tensors it produces
// that later ops read (or graph outputs) become its outputs. Weights are shared, not copied. This is
// what one pipeline stage (one chip) runs.
Graph extract_span(const Graph& graph, OpId first, OpId last);

// Parameters as the source framework counts them (BatchNorm's gamma and beta included, running
// statistics not). Sums to torchvision's parameter count for zoo models.
int64_t source_params(const Graph& graph, const Op& op);
// Parameters that must be stored to run the normalised op (folded BatchNorm = one bias per channel).
int64_t filter_elements(const Graph& graph, const Op& op);
// Multiply-accumulates per image (convolutions and fully-connected layers).
int64_t op_macs(const Graph& graph, const Op& op);
int64_t total_source_params(const Graph& graph);
int64_t total_macs(const Graph& graph);

// Parses "HxW" (or a single number for square inputs); throws an Error on anything else.
Resolution parse_resolution(std::string_view text);

struct ModelOptions {
  std::optional<Resolution> resolution;  // default: the model's own
  int64_t batch = 1;
  // Zoo models: fill weights with seeded random values (needed for execution, not for planning).
  bool with_weights = false;
  uint64_t weight_seed = 2106'14138;
};

// Zoo model names, in display order, and a one-line description of each.
struct ZooEntry {
  std::string_view name;
  std::string_view description;
  Resolution default_resolution;
};
std::span<const ZooEntry> zoo_models();
Graph zoo_model(std::string_view name, const ModelOptions& options = {});

// Imports an ONNX file (opsets 9 to 17). Initializers become weights. The input resolution and
// batch may be overridden when the file declares them symbolically or the user asks for another.
Graph import_onnx(const std::filesystem::path& path, const ModelOptions& options = {});

// A zoo name or a path to an .onnx file.
Graph load_model(std::string_view spec, const ModelOptions& options = {});

}  // namespace occam
