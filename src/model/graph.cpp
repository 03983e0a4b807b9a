#include "occam/error.hpp"
#include "occam/model.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <unordered_map>

namespace occam {

std::string Shape::str() const { return fmt::format("{}x{}x{}x{}", n, c, h, w); }

std::string_view to_string(OpKind kind) {
  switch (kind) {
    case OpKind::Conv: return "Conv";
    case OpKind::MaxPool: return "MaxPool";
    case OpKind::AvgPool: return "AvgPool";
    case OpKind::GlobalAvgPool: return "GlobalAvgPool";
    case OpKind::AdaptiveAvgPool: return "AdaptiveAvgPool";
    case OpKind::Gemm: return "Gemm";
    case OpKind::BatchNorm: return "BatchNorm";
    case OpKind::Add: return "Add";
    case OpKind::Sub: return "Sub";
    case OpKind::Mul: return "Mul";
    case OpKind::Concat: return "Concat";
    case OpKind::Slice: return "Slice";
    case OpKind::ChannelShuffle: return "ChannelShuffle";
    case OpKind::Activation: return "Activation";
    case OpKind::Flatten: return "Flatten";
    case OpKind::Softmax: return "Softmax";
    case OpKind::Identity: return "Identity";
  }
  return "?";
}

std::string_view to_string(ActKind kind) {
  switch (kind) {
    case ActKind::None: return "none";
    case ActKind::Relu: return "Relu";
    case ActKind::Clip: return "Clip";
    case ActKind::Sigmoid: return "Sigmoid";
    case ActKind::Swish: return "Swish";
    case ActKind::HardSigmoid: return "HardSigmoid";
    case ActKind::HardSwish: return "HardSwish";
    case ActKind::Tanh: return "Tanh";
    case ActKind::LeakyRelu: return "LeakyRelu";
  }
  return "?";
}

bool Graph::is_output(TensorId id) const {
  return std::find(outputs.begin(), outputs.end(), id) != outputs.end();
}

bool Graph::has_weights() const {
  return std::all_of(ops.begin(), ops.end(), [](const Op& op) {
    const bool needs = op.kind == OpKind::Conv || op.kind == OpKind::Gemm || op.kind == OpKind::BatchNorm;
    return !needs || op.weight != nullptr;
  });
}

namespace {

// Output length of a sliding window, with PyTorch's ceil_mode rule: the last window must start
// inside the input or its leading padding.
int64_t window_output(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t extent, int64_t stride,
                      bool ceil_mode) {
  const int64_t span = in + pad_begin + pad_end - extent;
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_begin) --out;
  return out;
}

std::string describe(std::string_view where, const Op& op) {
  return fmt::format("{}: node \"{}\" ({})", where, op.name, to_string(op.kind));
}

Shape infer_window(const Op& op, const Shape& in, std::string_view where) {
  const Window& win = op.window;
  if (win.kernel_h < 1 || win.kernel_w < 1 || win.stride_h < 1 || win.stride_w < 1 || win.dilation_h < 1 ||
      win.dilation_w < 1 || win.pad_top < 0 || win.pad_left < 0 || win.pad_bottom < 0 || win.pad_right < 0) {
    fail("{}: kernel, stride and dilation must be >= 1 and padding >= 0 (kernel {}x{}, stride {}x{})",
         describe(where, op), win.kernel_h, win.kernel_w, win.stride_h, win.stride_w);
  }
  const int64_t h = window_output(in.h, win.pad_top, win.pad_bottom, win.extent_h(), win.stride_h, win.ceil_mode);
  const int64_t w = window_output(in.w, win.pad_left, win.pad_right, win.extent_w(), win.stride_w, win.ceil_mode);
  if (h < 1 || w < 1) {
    fail("{}: kernel {}x{} does not fit input {}x{} (padding {},{})", describe(where, op), win.extent_h(),
         win.extent_w(), in.h, in.w, win.pad_top, win.pad_left);
  }
  return {in.n, in.c, h, w};
}

}  // namespace

Shape infer_shape(const Op& op, std::span<const Shape> inputs, std::string_view where) {
  const auto expect_inputs = [&](size_t count) {
    if (inputs.size() != count) {
      fail("{}: expected {} input{}, got {}", describe(where, op), count, count == 1 ? "" : "s", inputs.size());
    }
  };
  switch (op.kind) {
    case OpKind::Conv: {
      expect_inputs(1);
      const Shape& in = inputs[0];
      if (op.groups < 1 || in.c % op.groups != 0 || op.out_channels < 1 || op.out_channels % op.groups != 0) {
        fail("{}: {} input channels and {} output channels are not divisible into {} groups", describe(where, op),
             in.c, op.out_channels, op.groups);
      }
      const int64_t expected = op.out_channels * (in.c / op.groups) * op.window.kernel_h * op.window.kernel_w;
      if (op.weight && static_cast<int64_t>(op.weight->size()) != expected) {
        fail("{}: weight has {} elements, expected {} ({}x{}x{}x{})", describe(where, op), op.weight->size(),
             expected, op.out_channels, in.c / op.groups, op.window.kernel_h, op.window.kernel_w);
      }
      Shape out = infer_window(op, in, where);
      out.c = op.out_channels;
      return out;
    }
    case OpKind::MaxPool:
    case OpKind::AvgPool:
      expect_inputs(1);
      return infer_window(op, inputs[0], where);
    case OpKind::GlobalAvgPool:
      expect_inputs(1);
      return {inputs[0].n, inputs[0].c, 1, 1};
    case OpKind::AdaptiveAvgPool:
      expect_inputs(1);
      if (op.pooled.h < 1 || op.pooled.w < 1) {
        fail("{}: cannot pool input {}x{} to {}x{}", describe(where, op), inputs[0].h, inputs[0].w, op.pooled.h,
             op.pooled.w);
      }
      return {inputs[0].n, inputs[0].c, op.pooled.h, op.pooled.w};
    case OpKind::Gemm: {
      expect_inputs(1);
      const int64_t in_features = inputs[0].image_elements();
      if (op.out_channels < 1) fail("{}: output features must be >= 1", describe(where, op));
      if (op.weight && static_cast<int64_t>(op.weight->size()) != in_features * op.out_channels) {
        fail("{}: weight has {} elements, expected {} ({} outputs x {} inputs)", describe(where, op),
             op.weight->size(), in_features * op.out_channels, op.out_channels, in_features);
      }
      return {inputs[0].n, op.out_channels, 1, 1};
    }
    case OpKind::BatchNorm:
      expect_inputs(1);
      if (op.weight && static_cast<int64_t>(op.weight->size()) != inputs[0].c) {
        fail("{}: {} scale values for {} channels", describe(where, op), op.weight->size(), inputs[0].c);
      }
      return inputs[0];
    case OpKind::Activation:
    case OpKind::Softmax:
    case OpKind::Identity:
      expect_inputs(1);
      return inputs[0];
    case OpKind::Flatten:
      expect_inputs(1);
      return {inputs[0].n, inputs[0].image_elements(), 1, 1};
    case OpKind::Add:
    case OpKind::Sub:
    case OpKind::Mul: {
      expect_inputs(2);
      const Shape& a = inputs[0];
      const Shape& b = inputs[1];
      const auto broadcast = [&](int64_t x, int64_t y, const char* dim) {
        if (x != y && x != 1 && y != 1) {
          fail("{}: shapes {} and {} do not broadcast along {}", describe(where, op), a.str(), b.str(), dim);
        }
        return std::max(x, y);
      };
      return {broadcast(a.n, b.n, "N"), broadcast(a.c, b.c, "C"), broadcast(a.h, b.h, "H"), broadcast(a.w, b.w, "W")};
    }
    case OpKind::Slice: {
      expect_inputs(1);
      const Shape& in = inputs[0];
      if (op.channel_offset < 0 || op.out_channels < 1 || op.channel_offset > in.c - op.out_channels) {
        fail("{}: channels [{}, {}) are not a non-empty range of the input's {}", describe(where, op),
             op.channel_offset, op.channel_offset + op.out_channels, in.c);
      }
      return {in.n, op.out_channels, in.h, in.w};
    }
    case OpKind::ChannelShuffle:
      expect_inputs(1);
      if (op.groups < 1 || inputs[0].c % op.groups != 0) {
        fail("{}: {} channels do not divide into {} groups", describe(where, op), inputs[0].c, op.groups);
      }
      return inputs[0];
    case OpKind::Concat: {
      if (inputs.empty()) fail("{}: needs at least one input", describe(where, op));
      Shape out = inputs[0];
      out.c = 0;
      for (const Shape& in : inputs) {
        if (in.n != out.n || in.h != out.h || in.w != out.w) {
          fail("{}: cannot concatenate {} with {} along channels", describe(where, op), inputs[0].str(), in.str());
        }
        out.c += in.c;
      }
      return out;
    }
  }
  fail("{}: unknown op kind", describe(where, op));
}

GraphBuilder::GraphBuilder(std::string name, std::string where) {
  graph_.name = std::move(name);
  graph_.source = std::move(where);
}

TensorId GraphBuilder::input(std::string name, Shape shape) {
  if (shape.n < 1 || shape.c < 1 || shape.h < 1 || shape.w < 1) {
    fail("{}: input \"{}\" has invalid shape {}", graph_.source, name, shape.str());
  }
  Tensor tensor;
  tensor.name = std::move(name);
  tensor.shape = shape;
  graph_.tensors.push_back(std::move(tensor));
  const TensorId id = static_cast<TensorId>(graph_.tensors.size() - 1);
  graph_.inputs.push_back(id);
  return id;
}

TensorId GraphBuilder::add(Op op, std::string output_name) {
  std::vector<Shape> shapes;
  for (TensorId in : op.inputs) {
    if (in < 0 || in >= static_cast<TensorId>(graph_.tensors.size())) {
      fail("{}: node \"{}\" ({}) reads an undefined tensor", graph_.source, op.name, to_string(op.kind));
    }
    shapes.push_back(graph_.tensors[static_cast<size_t>(in)].shape);
  }
  const Shape out = infer_shape(op, shapes, graph_.source);
  Tensor tensor;
  tensor.name = output_name.empty() ? op.name : std::move(output_name);
  tensor.shape = out;
  graph_.tensors.push_back(std::move(tensor));
  op.output = static_cast<TensorId>(graph_.tensors.size() - 1);
  graph_.tensors.back().producer = static_cast<OpId>(graph_.ops.size());
  graph_.ops.push_back(std::move(op));
  return graph_.ops.back().output;
}

void GraphBuilder::mark_output(TensorId tensor) { graph_.outputs.push_back(tensor); }

const Shape& GraphBuilder::shape(TensorId tensor) const { return graph_.tensors.at(static_cast<size_t>(tensor)).shape; }

Graph GraphBuilder::finish() && {
  if (graph_.inputs.empty()) fail("{}: the graph has no input", graph_.source);
  if (graph_.ops.empty()) fail("{}: the graph has no operators", graph_.source);
  return normalize(std::move(graph_));
}

namespace {

void link_consumers(Graph& graph) {
  for (Tensor& t : graph.tensors) t.consumers.clear();
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    for (TensorId in : graph.ops[i].inputs) {
      auto& consumers = graph.tensors[static_cast<size_t>(in)].consumers;
      if (std::find(consumers.begin(), consumers.end(), static_cast<OpId>(i)) == consumers.end()) {
        consumers.push_back(static_cast<OpId>(i));
      }
    }
  }
}

bool fusable_activation_host(OpKind kind) {
  switch (kind) {
    case OpKind::Conv:
    case OpKind::Gemm:
    case OpKind::BatchNorm:
    case OpKind::Add:
    case OpKind::Sub:
    case OpKind::Mul:
      return true;
    default:
      return false;
  }
}

// conv' = conv * scale (per output channel); bias' = bias * scale + shift.
void fold_batchnorm(Op& conv, const Op& bn) {
  conv.folded_batchnorm = true;
  if (!conv.weight || !bn.weight || !bn.bias) {
    conv.weight = nullptr;
    conv.bias = nullptr;
    return;
  }
  const auto& scale = *bn.weight;
  const auto& shift = *bn.bias;
  auto weight = std::make_shared<std::vector<float>>(*conv.weight);
  auto bias = std::make_shared<std::vector<float>>(static_cast<size_t>(conv.out_channels), 0.0f);
  const size_t per_channel = weight->size() / static_cast<size_t>(conv.out_channels);
  for (size_t c = 0; c < bias->size(); ++c) {
    for (size_t k = 0; k < per_channel; ++k) (*weight)[c * per_channel + k] *= scale[c];
    const float own_bias = conv.bias ? (*conv.bias)[c] : 0.0f;
    (*bias)[c] = own_bias * scale[c] + shift[c];
  }
  conv.weight = std::move(weight);
  conv.bias = std::move(bias);
}

}  // namespace

Graph normalize(Graph graph) {
  link_consumers(graph);
  // alias[t]: the tensor that now carries the value of original tensor t.
  std::vector<TensorId> alias(graph.tensors.size());
  for (size_t t = 0; t < alias.size(); ++t) alias[t] = static_cast<TensorId>(t);
  const auto resolve = [&](TensorId t) {
    while (alias[static_cast<size_t>(t)] != t) t = alias[static_cast<size_t>(t)];
    return t;
  };
  const auto only_consumer_is = [&](TensorId t, OpId op) {
    const Tensor& tensor = graph.tensors[static_cast<size_t>(t)];
    return tensor.consumers.size() == 1 && tensor.consumers[0] == op && !graph.is_output(t);
  };
  // Looks through Identity ops (Dropout), which are removed too: a Flatten -> Dropout -> Gemm
  // classifier must normalise like the Flatten -> Gemm that an eval-mode export writes.
  const std::function<bool(TensorId)> all_consumers_are_gemm = [&](TensorId t) {
    const Tensor& tensor = graph.tensors[static_cast<size_t>(t)];
    return !tensor.consumers.empty() && !graph.is_output(t) &&
           std::all_of(tensor.consumers.begin(), tensor.consumers.end(), [&](OpId c) {
             const Op& consumer = graph.ops[static_cast<size_t>(c)];
             return consumer.kind == OpKind::Gemm ||
                    (consumer.kind == OpKind::Identity && all_consumers_are_gemm(consumer.output));
           });
  };

  std::vector<Op> kept;
  std::vector<int> kept_index_of_producer(graph.tensors.size(), -1);
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    Op op = graph.ops[i];
    for (TensorId& in : op.inputs) in = resolve(in);
    const OpId id = static_cast<OpId>(i);
    const TensorId source = op.inputs.empty() ? -1 : op.inputs[0];
    const int host = source >= 0 ? kept_index_of_producer[static_cast<size_t>(source)] : -1;
    // A fused op's input must have had this op as its only consumer in the original graph.
    const bool single_use = source >= 0 && only_consumer_is(graph.ops[i].inputs[0], id);

    if (op.kind == OpKind::Identity) {
      alias[static_cast<size_t>(op.output)] = source;
      continue;
    }
    if (op.kind == OpKind::Flatten && all_consumers_are_gemm(op.output)) {
      alias[static_cast<size_t>(op.output)] = source;
      continue;
    }
    if (op.kind == OpKind::BatchNorm && host >= 0 && single_use) {
      Op& conv = kept[static_cast<size_t>(host)];
      if (conv.kind == OpKind::Conv && !conv.folded_batchnorm && conv.activation.kind == ActKind::None) {
        fold_batchnorm(conv, op);
        alias[static_cast<size_t>(op.output)] = source;
        continue;
      }
    }
    if (op.kind == OpKind::Activation && host >= 0 && single_use) {
      Op& producer = kept[static_cast<size_t>(host)];
      if (fusable_activation_host(producer.kind) && producer.activation.kind == ActKind::None) {
        producer.activation = op.activation;
        alias[static_cast<size_t>(op.output)] = source;
        continue;
      }
    }
    kept_index_of_producer[static_cast<size_t>(op.output)] = static_cast<int>(kept.size());
    kept.push_back(std::move(op));
  }

  // Graph outputs that were aliased keep their original (user-visible) names.
  std::vector<TensorId> outputs;
  for (TensorId t : graph.outputs) {
    const TensorId r = resolve(t);
    graph.tensors[static_cast<size_t>(r)].name = graph.tensors[static_cast<size_t>(t)].name;
    outputs.push_back(r);
  }

  // Compact: keep graph inputs and every tensor an op produces, in order.
  std::vector<TensorId> remap(graph.tensors.size(), -1);
  Graph out;
  out.name = std::move(graph.name);
  out.source = std::move(graph.source);
  const auto keep = [&](TensorId t) {
    if (remap[static_cast<size_t>(t)] < 0) {
      remap[static_cast<size_t>(t)] = static_cast<TensorId>(out.tensors.size());
      out.tensors.push_back(graph.tensors[static_cast<size_t>(t)]);
    }
    return remap[static_cast<size_t>(t)];
  };
  for (TensorId t : graph.inputs) out.inputs.push_back(keep(t));
  for (Op& op : kept) {
    for (TensorId& in : op.inputs) {
      if (remap[static_cast<size_t>(in)] < 0) {
        fail("{}: node \"{}\" ({}) reads tensor \"{}\", which no node produces", out.source, op.name,
             to_string(op.kind), graph.tensors[static_cast<size_t>(in)].name);
      }
      in = remap[static_cast<size_t>(in)];
    }
    op.output = keep(op.output);
    out.ops.push_back(std::move(op));
  }
  for (TensorId t : outputs) {
    if (remap[static_cast<size_t>(t)] < 0) fail("{}: graph output \"{}\" is never produced", out.source,
                                                 graph.tensors[static_cast<size_t>(t)].name);
    out.outputs.push_back(remap[static_cast<size_t>(t)]);
  }
  for (Tensor& t : out.tensors) t.producer = -1;
  for (size_t i = 0; i < out.ops.size(); ++i) out.tensors[static_cast<size_t>(out.ops[i].output)].producer = static_cast<OpId>(i);
  link_consumers(out);
  if (out.outputs.empty()) {
    for (size_t t = 0; t < out.tensors.size(); ++t) {
      if (out.tensors[t].consumers.empty() && out.tensors[t].producer >= 0) out.outputs.push_back(static_cast<TensorId>(t));
    }
  }
  return out;
}

Graph extract_span(const Graph& graph, OpId first, OpId last) {
  if (first < 0 || last < first || last >= static_cast<OpId>(graph.ops.size())) {
    fail("{}: invalid span of ops [{}, {}] (the graph has {})", graph.source, first, last, graph.ops.size());
  }
  const auto inside = [&](OpId o) { return o >= first && o <= last; };
  Graph span;
  span.name = fmt::format("{}[{}..{}]", graph.name, graph.op(first).name, graph.op(last).name);
  span.source = graph.source;
  std::vector<TensorId> remap(graph.tensors.size(), -1);
  const auto keep = [&](TensorId t) {
    if (remap[static_cast<size_t>(t)] < 0) {
      remap[static_cast<size_t>(t)] = static_cast<TensorId>(span.tensors.size());
      Tensor copy = graph.tensor(t);
      copy.producer = -1;
      copy.consumers.clear();
      span.tensors.push_back(std::move(copy));
    }
    return remap[static_cast<size_t>(t)];
  };
  for (OpId o = first; o <= last; ++o) {
    Op op = graph.op(o);
    for (TensorId& in : op.inputs) {
      const bool external = !inside(graph.tensor(in).producer);
      const bool seen = remap[static_cast<size_t>(in)] >= 0;
      in = keep(in);
      if (external && !seen) span.inputs.push_back(in);
    }
    const TensorId original_output = op.output;
    op.output = keep(original_output);
    span.tensors[static_cast<size_t>(op.output)].producer = static_cast<OpId>(span.ops.size());
    const Tensor& out = graph.tensor(original_output);
    const bool leaves = graph.is_output(original_output) ||
                        std::any_of(out.consumers.begin(), out.consumers.end(), [&](OpId c) { return !inside(c); });
    if (leaves) span.outputs.push_back(op.output);
    span.ops.push_back(std::move(op));
  }
  link_consumers(span);
  return span;
}

namespace {

// Elements of an op's weight tensor proper (no bias, no BatchNorm terms).
int64_t weight_elements(const Graph& graph, const Op& op) {
  const Shape& in = graph.input_of(op).shape;
  switch (op.kind) {
    case OpKind::Conv: return op.out_channels * (in.c / op.groups) * op.window.kernel_h * op.window.kernel_w;
    case OpKind::Gemm: return in.image_elements() * op.out_channels;
    case OpKind::BatchNorm: return 2 * in.c;  // scale and shift (gamma and beta in the source)
    default: return 0;
  }
}

}  // namespace

int64_t source_params(const Graph& graph, const Op& op) {
  return weight_elements(graph, op) + (op.has_bias ? op.out_channels : 0) +
         (op.folded_batchnorm ? 2 * op.out_channels : 0);
}

int64_t filter_elements(const Graph& graph, const Op& op) {
  return weight_elements(graph, op) + (op.has_bias || op.folded_batchnorm ? op.out_channels : 0);
}

int64_t op_macs(const Graph& graph, const Op& op) {
  const Shape& in = graph.input_of(op).shape;
  const Shape& out = graph.output_of(op).shape;
  switch (op.kind) {
    case OpKind::Conv:
      return out.image_elements() * (in.c / op.groups) * op.window.kernel_h * op.window.kernel_w;
    case OpKind::Gemm:
      return in.image_elements() * op.out_channels;
    default:
      return 0;
  }
}

int64_t total_source_params(const Graph& graph) {
  int64_t total = 0;
  for (const Op& op : graph.ops) total += source_params(graph, op);
  return total;
}

int64_t total_macs(const Graph& graph) {
  int64_t total = 0;
  for (const Op& op : graph.ops) total += op_macs(graph, op);
  return total;
}

Resolution parse_resolution(std::string_view text) {
  const auto parse = [&](std::string_view part) {
    int64_t value = 0;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc() || end != part.data() + part.size() || value < 1 || value > 65536) {
      fail("resolution \"{}\": expected HxW with positive integers (e.g. 224x224 or 1080x1920)", text);
    }
    return value;
  };
  const size_t x = text.find_first_of("xX");
  if (x == std::string_view::npos) {
    const int64_t side = parse(text);
    return {side, side};
  }
  return {parse(text.substr(0, x)), parse(text.substr(x + 1))};
}

Graph load_model(std::string_view spec, const ModelOptions& options) {
  if (spec.ends_with(".onnx") || spec.find('/') != std::string_view::npos) {
    return import_onnx(std::filesystem::path(spec), options);
  }
  return zoo_model(spec, options);
}

}  // namespace occam
