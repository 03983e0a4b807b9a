// ONNX import: reads a ModelProto with libonnx's protobuf classes and rebuilds it node by node
// through GraphBuilder, so that an imported model's shapes are inferred and checked by the same
// code as a zoo model's.
//
// Every ONNX value is either a constant (an initializer, a Constant node, or an Identity of
// either: torch deduplicates equal initializers that way), which ends up in an op's weight or
// bias, or an activation, which becomes an IR tensor. The IR is NCHW with fully-connected values
// stored as (N, C, 1, 1); each activation also remembers its ONNX rank, because ONNX broadcasting
// and axis numbering depend on it.
#include "occam/error.hpp"
#include "occam/model.hpp"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cmath>
#include <deque>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <unordered_map>
#include <unordered_set>

namespace occam {
namespace {

constexpr int64_t kMinOpset = 9;
constexpr int64_t kMaxOpset = 17;

// Bounds that keep every derived size well inside int64 and window geometry inside int, so that a
// malformed file ends in an error instead of an overflow.
constexpr int64_t kMaxElements = int64_t{1} << 40;
constexpr int64_t kMaxGeometry = int64_t{1} << 20;

std::string join(const std::vector<int64_t>& values, std::string_view separator) {
  std::string text;
  for (size_t i = 0; i < values.size(); ++i) text += fmt::format("{}{}", i == 0 ? "" : separator, values[i]);
  return text;
}

std::string dims_str(const std::vector<int64_t>& dims) { return dims.empty() ? "scalar" : join(dims, "x"); }

std::string type_name(int32_t data_type) {
  const std::string& name = onnx::TensorProto::DataType_Name(data_type);
  return name.empty() ? fmt::format("type {}", data_type) : name;
}

// One node, with the context that every message about it carries.
class Node {
public:
  Node(const onnx::NodeProto& proto, int index, std::string_view file)
      : proto(proto),
        name(proto.name().empty() ? fmt::format("{}_{}", proto.op_type(), index) : proto.name()),
        where(fmt::format("{}: node \"{}\" ({})", file, name, proto.op_type())) {}

  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) const {
    occam::fail("{}: {}", where, fmt::format(format, std::forward<Args>(args)...));
  }

  void expect_inputs(int least, int most) const {
    const int count = proto.input_size();
    if (count < least || count > most) {
      if (least == most) fail("expected {} input{}, got {}", least, least == 1 ? "" : "s", count);
      fail("expected {} to {} inputs, got {}", least, most, count);
    }
  }
  // ONNX marks an omitted optional input with an empty name.
  bool has_input(int i) const { return i < proto.input_size() && !proto.input(i).empty(); }
  const std::string& input(int i) const {
    if (!has_input(i)) fail("input {} is missing", i);
    return proto.input(i);
  }
  const std::string& output() const {
    if (proto.output_size() < 1 || proto.output(0).empty()) fail("has no output");
    return proto.output(0);
  }
  // Extra outputs (MaxPool's indices, training-mode BatchNorm statistics) have no IR counterpart.
  void expect_single_output(std::string_view why) const {
    for (int i = 1; i < proto.output_size(); ++i) {
      if (!proto.output(i).empty()) fail("output {} (\"{}\") is not supported: {}", i, proto.output(i), why);
    }
  }

  const onnx::AttributeProto* attribute(std::string_view key, onnx::AttributeProto::AttributeType type) const {
    for (const onnx::AttributeProto& attr : proto.attribute()) {
      if (attr.name() != key) continue;
      if (attr.type() != type) {
        fail("attribute \"{}\" has type {}, expected {}", key, onnx::AttributeProto::AttributeType_Name(attr.type()),
             onnx::AttributeProto::AttributeType_Name(type));
      }
      return &attr;
    }
    return nullptr;
  }
  int64_t int_attr(std::string_view key, int64_t fallback) const {
    const auto* attr = attribute(key, onnx::AttributeProto::INT);
    return attr ? attr->i() : fallback;
  }
  float float_attr(std::string_view key, float fallback) const {
    const auto* attr = attribute(key, onnx::AttributeProto::FLOAT);
    return attr ? attr->f() : fallback;
  }
  std::vector<int64_t> ints_attr(std::string_view key) const {
    std::vector<int64_t> values;
    if (const auto* attr = attribute(key, onnx::AttributeProto::INTS)) values.assign(attr->ints().begin(), attr->ints().end());
    return values;
  }
  std::string string_attr(std::string_view key, std::string fallback) const {
    const auto* attr = attribute(key, onnx::AttributeProto::STRING);
    return attr ? attr->s() : fallback;
  }
  // Normalises a possibly negative axis against the input's ONNX rank.
  int64_t axis_attr(int64_t fallback, int rank) const {
    const int64_t axis = int_attr("axis", fallback);
    if (axis < -rank || axis >= rank) fail("axis {} is out of range for a rank-{} input", axis, rank);
    return axis < 0 ? axis + rank : axis;
  }

  const onnx::NodeProto& proto;
  const std::string name;
  const std::string where;
};

struct Value {
  TensorId id = -1;
  int rank = 4;
};

// A channel shuffle under way: the 4-D value it shuffles, and whether the Transpose was seen.
struct PendingShuffle {
  Value input;
  int64_t groups = 1;
  bool transposed = false;
};

// Zero padding of a value by a Pad node, waiting for the window op that reads it.
struct Padding {
  int top = 0, left = 0, bottom = 0, right = 0;
  bool operator==(const Padding&) const = default;
};

struct FloatTensor {
  std::vector<int64_t> dims;
  Buffer values;
  size_t size() const { return values->size(); }
};

// Reads little-endian fixed-width values byte by byte: correct on any host, and compilers turn it
// into plain loads on little-endian ones.
template <typename Word>
Word load_le(const char* bytes) {
  Word word = 0;
  for (size_t b = 0; b < sizeof(Word); ++b) word |= static_cast<Word>(static_cast<unsigned char>(bytes[b])) << (8 * b);
  return word;
}

class Importer {
public:
  Importer(const std::filesystem::path& path, const onnx::ModelProto& model, const ModelOptions& options)
      : file_(path.string()),
        graph_(model.graph()),
        options_(options),
        builder_(path.stem().string(), path.string()) {
    opset_ = default_opset(model);
    for (const onnx::TensorProto& init : graph_.initializer()) {
      if (!constants_.emplace(init.name(), &init).second) {
        occam::fail("{}: initializer \"{}\" is defined twice", file_, init.name());
      }
    }
    for (int i = 0; i < graph_.node_size(); ++i) {
      for (const std::string& input : graph_.node(i).input()) consumers_[input].push_back(i);
    }
    for (const onnx::ValueInfoProto& output : graph_.output()) graph_outputs_.insert(output.name());
  }

  Graph import() && {
    add_inputs();
    for (int i = 0; i < graph_.node_size(); ++i) {
      if (absorbed_.contains(i)) continue;
      import_node(Node(graph_.node(i), i, file_));
    }
    for (const onnx::ValueInfoProto& output : graph_.output()) {
      const auto found = activations_.find(output.name());
      if (found == activations_.end()) {
        occam::fail("{}: graph output \"{}\" is not computed by any supported node", file_, output.name());
      }
      builder_.mark_output(found->second.id);
    }
    return std::move(builder_).finish();
  }

private:
  using Handler = std::function<void(Importer&, const Node&)>;

  int64_t default_opset(const onnx::ModelProto& model) const {
    for (const onnx::OperatorSetIdProto& set : model.opset_import()) {
      if (!set.domain().empty() && set.domain() != "ai.onnx") continue;
      if (set.version() < kMinOpset || set.version() > kMaxOpset) {
        occam::fail("{}: opset {} is not supported (supported: ONNX opsets {} to {})", file_, set.version(), kMinOpset,
                    kMaxOpset);
      }
      return set.version();
    }
    occam::fail("{}: the model imports no default-domain ONNX opset (supported: opsets {} to {})", file_, kMinOpset,
                kMaxOpset);
  }

  // The image input: dimensions the file leaves symbolic come from the options.
  void add_inputs() {
    for (const onnx::ValueInfoProto& input : graph_.input()) {
      // IR versions before 4 list initializers among the inputs too; those are weights.
      if (constants_.contains(input.name())) continue;
      const auto where = fmt::format("{}: input \"{}\"", file_, input.name());
      if (!input.type().has_tensor_type() || !input.type().tensor_type().has_shape()) {
        occam::fail("{}: expected a tensor with a declared shape", where);
      }
      const onnx::TypeProto::Tensor& type = input.type().tensor_type();
      if (type.elem_type() != onnx::TensorProto::FLOAT) {
        occam::fail("{}: element type {} is not supported (expected FLOAT)", where,
                    type_name(type.elem_type()));
      }
      if (type.shape().dim_size() != 4) {
        occam::fail("{}: rank {} is not supported (expected an NCHW image, rank 4)", where, type.shape().dim_size());
      }
      const auto dim = [&](int i) -> std::optional<int64_t> {
        const auto& d = type.shape().dim(i);
        if (!d.has_dim_value() || d.dim_value() < 1) return std::nullopt;
        return d.dim_value();
      };
      Shape shape;
      // ModelOptions::batch cannot tell a requested 1 from its default, so a batch fixed in the file
      // wins over 1 but not over any other request.
      shape.n = options_.batch != 1 ? options_.batch : dim(0).value_or(options_.batch);
      const auto channels = dim(1);
      if (!channels) occam::fail("{}: the channel count is symbolic; it must be fixed in the file", where);
      shape.c = *channels;
      if (options_.resolution) {
        shape.h = options_.resolution->h;
        shape.w = options_.resolution->w;
      } else {
        const auto h = dim(2), w = dim(3);
        if (!h || !w) occam::fail("{}: height and width are symbolic; pass --resolution HxW", where);
        shape.h = *h;
        shape.w = *w;
      }
      // With every dimension at most 2^20 the partial products below cannot overflow.
      for (const int64_t d : {shape.n, shape.c, shape.h, shape.w}) {
        if (d > kMaxGeometry) occam::fail("{}: shape {} has a dimension over {}", where, shape.str(), kMaxGeometry);
      }
      if (shape.n * shape.c * shape.h > kMaxElements || shape.elements() > kMaxElements) {
        occam::fail("{}: shape {} is too large", where, shape.str());
      }
      activations_[input.name()] = {builder_.input(input.name(), shape), 4};
    }
  }

  void import_node(const Node& node) {
    static const std::map<std::string, Handler, std::less<>> handlers = {
        {"Add", [](Importer& im, const Node& n) { im.binary(n, OpKind::Add); }},
        {"AveragePool", [](Importer& im, const Node& n) { im.pool(n, OpKind::AvgPool); }},
        {"BatchNormalization", &Importer::batchnorm},
        {"Cast", &Importer::cast},
        {"Clip", &Importer::clip},
        {"Concat", &Importer::concat},
        {"Constant", &Importer::constant},
        {"Conv", &Importer::conv},
        {"Div", &Importer::fold_arithmetic},
        {"Dropout", [](Importer& im, const Node& n) { im.identity(n, 3); }},
        {"Flatten", &Importer::flatten},
        {"Gather", &Importer::gather},
        {"Gemm", &Importer::gemm},
        {"GlobalAveragePool", &Importer::global_avgpool},
        {"HardSigmoid",
         [](Importer& im, const Node& n) {
           const Activation gate = {ActKind::HardSigmoid, n.float_attr("alpha", 0.2f), n.float_attr("beta", 0.5f)};
           im.gate(n, gate, gate.lo == 1.0f / 6.0f && gate.hi == 0.5f ? ActKind::HardSwish : ActKind::None);
         }},
        {"HardSwish", [](Importer& im, const Node& n) { im.elementwise(n, {ActKind::HardSwish}); }},
        {"Identity", [](Importer& im, const Node& n) { im.identity(n, 1); }},
        {"LeakyRelu",
         [](Importer& im, const Node& n) { im.elementwise(n, {ActKind::LeakyRelu, n.float_attr("alpha", 0.01f)}); }},
        {"MatMul", &Importer::matmul},
        {"MaxPool", [](Importer& im, const Node& n) { im.pool(n, OpKind::MaxPool); }},
        {"Mul", [](Importer& im, const Node& n) { im.binary(n, OpKind::Mul); }},
        {"Pad", &Importer::pad},
        {"ReduceMean", &Importer::reduce_mean},
        {"Relu", [](Importer& im, const Node& n) { im.elementwise(n, Activation::relu()); }},
        {"Reshape", &Importer::reshape},
        {"Shape", &Importer::shape_of},
        {"Sigmoid", [](Importer& im, const Node& n) { im.gate(n, {ActKind::Sigmoid}, ActKind::Swish); }},
        {"Slice", &Importer::slice},
        {"Softmax", &Importer::softmax},
        {"Sub", [](Importer& im, const Node& n) { im.binary(n, OpKind::Sub); }},
        {"Tanh", [](Importer& im, const Node& n) { im.elementwise(n, {ActKind::Tanh}); }},
        {"Transpose", &Importer::transpose},
        {"Unsqueeze", &Importer::unsqueeze},
    };
    const std::string& domain = node.proto.domain();
    const auto handler = handlers.find(node.proto.op_type());
    if (handler == handlers.end() || (!domain.empty() && domain != "ai.onnx")) {
      std::string supported;
      for (const auto& [op_type, _] : handlers) supported += fmt::format("{}{}", supported.empty() ? "" : ", ", op_type);
      node.fail("unsupported operator \"{}\"{}; supported operators (default domain): {}", node.proto.op_type(),
                domain.empty() ? "" : fmt::format(" in domain \"{}\"", domain), supported);
    }
    handler->second(*this, node);
  }

  // ---- values ----

  Value activation(const Node& node, int i) const {
    const std::string& name = node.input(i);
    if (const auto found = activations_.find(name); found != activations_.end()) return found->second;
    if (constants_.contains(name)) node.fail("input \"{}\" is a constant where an activation is expected", name);
    if (shuffles_.contains(name)) node.fail("input \"{}\" is 5-D; {}", name, kShufflePattern);
    node.fail("input \"{}\" is not defined by a graph input, an initializer or an earlier node", name);
  }

  Value activation(const Node& node, int i, std::initializer_list<int> ranks) const {
    const Value value = activation(node, i);
    if (std::find(ranks.begin(), ranks.end(), value.rank) == ranks.end()) {
      node.fail("input \"{}\" has rank {}; expected rank {}", node.input(i), value.rank,
                ranks.size() == 1 ? fmt::format("{}", *ranks.begin()) : "2 or 4");
    }
    return value;
  }

  const onnx::TensorProto& constant_proto(const Node& node, int i) const {
    const std::string& name = node.input(i);
    if (const auto found = constants_.find(name); found != constants_.end()) return *found->second;
    if (activations_.contains(name)) {
      node.fail("input \"{}\" must be an initializer or a Constant; it is computed at run time", name);
    }
    node.fail("input \"{}\" is not defined by a graph input, an initializer or an earlier node", name);
  }

  // Dimensions and element count, checked against overflow before any data is touched.
  static std::vector<int64_t> dims_of(const Node& node, const onnx::TensorProto& tensor, int64_t& count) {
    if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
      node.fail("tensor \"{}\" keeps its data in an external file, which is not supported", tensor.name());
    }
    std::vector<int64_t> dims(tensor.dims().begin(), tensor.dims().end());
    count = 1;
    for (int64_t d : dims) {
      if (d < 0 || (d > 0 && count > kMaxElements / d)) {
        node.fail("tensor \"{}\" has invalid dimensions {}", tensor.name(), dims_str(dims));
      }
      count *= d;
    }
    return dims;
  }

  // FLOAT and INT64 data, from raw_data (little-endian) or the typed field.
  template <typename T, typename Field>
  static std::vector<T> decode(const Node& node, const onnx::TensorProto& tensor, const std::vector<int64_t>& dims,
                               int64_t count, const Field& field) {
    using Word = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    const std::string& raw = tensor.raw_data();
    const auto expected = static_cast<size_t>(count);
    if (raw.empty()) {
      if (static_cast<size_t>(field.size()) != expected) {
        node.fail("tensor \"{}\" ({}) holds {} values, expected {}", tensor.name(), dims_str(dims), field.size(),
                  expected);
      }
      return {field.begin(), field.end()};
    }
    if (raw.size() != expected * sizeof(T)) {
      node.fail("tensor \"{}\" ({} {}) has {} bytes of raw_data, expected {}", tensor.name(), dims_str(dims),
                type_name(tensor.data_type()), raw.size(), expected * sizeof(T));
    }
    std::vector<T> values(expected);
    for (size_t k = 0; k < expected; ++k) values[k] = std::bit_cast<T>(load_le<Word>(raw.data() + k * sizeof(T)));
    return values;
  }

  // Decoded once per tensor, so that weights torch shares through Identity nodes stay shared.
  FloatTensor floats(const Node& node, int i) {
    const onnx::TensorProto& tensor = constant_proto(node, i);
    if (tensor.data_type() != onnx::TensorProto::FLOAT) {
      node.fail("tensor \"{}\" has element type {}; weights must be FLOAT", tensor.name(),
                type_name(tensor.data_type()));
    }
    int64_t count = 0;
    FloatTensor result;
    result.dims = dims_of(node, tensor, count);
    Buffer& values = decoded_[&tensor];
    if (!values) {
      values = std::make_shared<const std::vector<float>>(decode<float>(node, tensor, result.dims, count, tensor.float_data()));
    }
    result.values = values;
    return result;
  }

  struct IntTensor {
    std::vector<int64_t> dims;
    std::vector<int64_t> values;
  };

  IntTensor int_tensor(const Node& node, int i) const {
    const onnx::TensorProto& tensor = constant_proto(node, i);
    if (tensor.data_type() != onnx::TensorProto::INT64) {
      node.fail("tensor \"{}\" has element type {}, expected INT64", tensor.name(),
                type_name(tensor.data_type()));
    }
    int64_t count = 0;
    IntTensor result;
    result.dims = dims_of(node, tensor, count);
    result.values = decode<int64_t>(node, tensor, result.dims, count, tensor.int64_data());
    return result;
  }
  std::vector<int64_t> ints(const Node& node, int i) const { return int_tensor(node, i).values; }

  bool is_int_constant(const std::string& name) const {
    const auto found = constants_.find(name);
    return found != constants_.end() && found->second->data_type() == onnx::TensorProto::INT64;
  }

  // The result of a shape computation folded at import: from here on a constant like any initializer.
  void define_ints(const Node& node, const std::vector<int64_t>& dims, const std::vector<int64_t>& values) {
    check_new_name(node, node.output());
    onnx::TensorProto& made = owned_.emplace_back();
    made.set_name(node.output());
    made.set_data_type(onnx::TensorProto::INT64);
    for (const int64_t d : dims) made.add_dims(d);
    for (const int64_t v : values) made.add_int64_data(v);
    constants_[node.output()] = &made;
  }

  float scalar(const Node& node, int i) {
    const FloatTensor tensor = floats(node, i);
    if (tensor.size() != 1) node.fail("input \"{}\" must be a single value, got {}", node.input(i), dims_str(tensor.dims));
    return tensor.values->front();
  }

  void check_new_name(const Node& node, const std::string& name) const {
    if (activations_.contains(name) || constants_.contains(name) || shuffles_.contains(name)) {
      node.fail("output \"{}\" is already defined", name);
    }
  }

  void emit(const Node& node, Op op, int rank, const std::string& output_name) {
    check_new_name(node, output_name);
    op.name = node.name;
    const TensorId id = builder_.add(std::move(op), output_name);
    activations_[output_name] = {id, rank};
  }
  void emit(const Node& node, Op op, int rank) { emit(node, std::move(op), rank, node.output()); }

  static Op unary_op(OpKind kind, Value input) {
    Op op;
    op.kind = kind;
    op.inputs = {input.id};
    return op;
  }

  // ---- operators ----

  // An int-valued attribute pair (one value per spatial axis), bounded so that int arithmetic on
  // window geometry cannot overflow.
  std::array<int, 2> pair_attr(const Node& node, std::string_view key, int fallback, int least) const {
    const std::vector<int64_t> values = node.ints_attr(key);
    if (values.empty()) return {fallback, fallback};
    if (values.size() != 2) node.fail("{} has {} values, expected 2 (only 2-D windows are supported)", key, values.size());
    for (int64_t v : values) {
      if (v < least || v > kMaxGeometry) node.fail("{} [{}] must be in {}..{}", key, join(values, ", "), least, kMaxGeometry);
    }
    return {static_cast<int>(values[0]), static_cast<int>(values[1])};
  }

  Window window(const Node& node, const Shape& in, std::array<int64_t, 2> kernel) const {
    for (int64_t k : kernel) {
      if (k < 1 || k > kMaxGeometry) node.fail("kernel {}x{} is out of range", kernel[0], kernel[1]);
    }
    Window win;
    win.kernel_h = static_cast<int>(kernel[0]);
    win.kernel_w = static_cast<int>(kernel[1]);
    const auto strides = pair_attr(node, "strides", 1, 1);
    win.stride_h = strides[0];
    win.stride_w = strides[1];
    const auto dilations = pair_attr(node, "dilations", 1, 1);
    win.dilation_h = dilations[0];
    win.dilation_w = dilations[1];
    if (int64_t{win.kernel_h - 1} * win.dilation_h >= kMaxGeometry ||
        int64_t{win.kernel_w - 1} * win.dilation_w >= kMaxGeometry) {
      node.fail("dilated kernel extent is out of range");
    }
    const std::string auto_pad = node.string_attr("auto_pad", "NOTSET");
    const std::vector<int64_t> pads = node.ints_attr("pads");
    if (auto_pad == "NOTSET") {
      if (!pads.empty()) {
        if (pads.size() != 4) node.fail("pads has {} values, expected 4 (top, left, bottom, right)", pads.size());
        for (int64_t p : pads) {
          if (p < 0 || p > kMaxGeometry) node.fail("pads [{}] must be in 0..{}", join(pads, ", "), kMaxGeometry);
        }
        win.pad_top = static_cast<int>(pads[0]);
        win.pad_left = static_cast<int>(pads[1]);
        win.pad_bottom = static_cast<int>(pads[2]);
        win.pad_right = static_cast<int>(pads[3]);
      }
    } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      // Output = ceil(input / stride); the odd padding element goes at the end (UPPER) or the start.
      const auto same = [&](int64_t size, int stride, int extent, int& begin, int& end) {
        const int64_t out = (size + stride - 1) / stride;
        const auto total = static_cast<int>(std::max<int64_t>(0, (out - 1) * stride + extent - size));
        begin = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
        end = total - begin;
      };
      same(in.h, win.stride_h, win.extent_h(), win.pad_top, win.pad_bottom);
      same(in.w, win.stride_w, win.extent_w(), win.pad_left, win.pad_right);
    } else if (auto_pad != "VALID") {
      node.fail("auto_pad \"{}\" is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER", auto_pad);
    }
    return win;
  }

  void conv(const Node& node) {
    node.expect_inputs(2, 3);
    const Value x = activation(node, 0, {4});
    const Shape& in = builder_.shape(x.id);
    const FloatTensor weight = floats(node, 1);
    if (weight.dims.size() != 4) {
      node.fail("weight \"{}\" is {}; expected 4-D [M, C/group, kH, kW] (only 2-D convolutions are supported)",
                node.input(1), dims_str(weight.dims));
    }
    const int64_t group = node.int_attr("group", 1);
    if (group < 1 || group > in.c) node.fail("group {} is out of range for {} input channels", group, in.c);
    if (weight.dims[1] * group != in.c) {
      node.fail("weight \"{}\" is {}, which expects {} input channels ({} per group x {} groups); the input {} has {}",
                node.input(1), dims_str(weight.dims), weight.dims[1] * group, weight.dims[1], group, in.str(), in.c);
    }
    const std::vector<int64_t> kernel_shape = node.ints_attr("kernel_shape");
    if (!kernel_shape.empty() && kernel_shape != std::vector<int64_t>{weight.dims[2], weight.dims[3]}) {
      node.fail("kernel_shape [{}] does not match the weight {}", join(kernel_shape, ", "), dims_str(weight.dims));
    }
    Op op = unary_op(OpKind::Conv, x);
    op.window = window(node, in, {weight.dims[2], weight.dims[3]});
    add_explicit_padding(node, op.window);
    op.out_channels = weight.dims[0];
    op.groups = static_cast<int>(group);
    op.weight = weight.values;
    if (node.has_input(2)) {
      const FloatTensor bias = floats(node, 2);
      if (static_cast<int64_t>(bias.size()) != op.out_channels) {
        node.fail("bias \"{}\" has {} values, expected {} (one per output channel)", node.input(2), bias.size(),
                  op.out_channels);
      }
      op.has_bias = true;
      op.bias = bias.values;
    }
    emit(node, std::move(op), 4);
  }

  void pool(const Node& node, OpKind kind) {
    node.expect_inputs(1, 1);
    node.expect_single_output("pooling indices have no IR counterpart");
    const Value x = activation(node, 0, {4});
    const std::vector<int64_t> kernel = node.ints_attr("kernel_shape");
    if (kernel.size() != 2) node.fail("kernel_shape must have 2 values (a 2-D window), got [{}]", join(kernel, ", "));
    Op op = unary_op(kind, x);
    op.window = window(node, builder_.shape(x.id), {kernel[0], kernel[1]});
    op.window.ceil_mode = node.int_attr("ceil_mode", 0) != 0;
    if (kind == OpKind::AvgPool) {
      op.count_include_pad = node.int_attr("count_include_pad", 0) != 0;
      if (const auto found = padded_.find(node.input(0)); found != padded_.end() && found->second != Padding{}) {
        // The explicit zeros are averaged like values; so must the pool's own padding be.
        if (!op.count_include_pad && op.window.pad_top + op.window.pad_left + op.window.pad_bottom + op.window.pad_right > 0) {
          node.fail("reads the zero-padded \"{}\" but pads itself without counting the padding (count_include_pad 0): "
                    "the two paddings cannot be averaged as one",
                    node.input(0));
        }
        op.count_include_pad = true;
        add_explicit_padding(node, op.window);
      }
      // torch exports adaptive pooling to the input's own size (AlexNet's and VGG's classifier
      // input at 224x224) as a 1x1 average; the zoo has no op there either.
      if (op.window == Window::square(1)) op.kind = OpKind::Identity;
    }
    emit(node, std::move(op), 4);
  }

  // Constant zero padding of the spatial axes, as torch writes F.pad and the padding of
  // AveragePool(count_include_pad=True): it has no IR op of its own but becomes the padding of the
  // Conv or AveragePool that reads it, which pads with zeros anyway. Any other reader would see
  // the zeros as data (a MaxPool pads with -inf), so it is rejected.
  void pad(const Node& node) {
    node.expect_inputs(1, opset_ < 11 ? 1 : 3);
    const Value x = activation(node, 0, {4});
    const std::string mode = node.string_attr("mode", "constant");
    if (mode != "constant") node.fail("mode \"{}\" is not supported; only constant (zero) padding is", mode);
    std::vector<int64_t> pads;
    float value = 0.0f;
    if (opset_ < 11) {
      pads = node.ints_attr("pads");
      value = node.float_attr("value", 0.0f);
    } else {
      pads = ints(node, 1);
      if (node.has_input(2)) value = scalar(node, 2);
    }
    if (value != 0.0f) node.fail("pads with {}; only zero padding is supported", value);
    if (pads.size() != 8) node.fail("pads has {} values, expected 8 (begin and end of N, C, H, W)", pads.size());
    if (pads[0] != 0 || pads[1] != 0 || pads[4] != 0 || pads[5] != 0) {
      node.fail("pads [{}] pad the batch or channel axis; only height and width can be padded", join(pads, ", "));
    }
    for (const int64_t p : pads) {
      if (p < 0 || p > kMaxGeometry) node.fail("pads [{}] must be in 0..{} (negative pads crop)", join(pads, ", "), kMaxGeometry);
    }
    const std::string& output = node.output();
    if (graph_outputs_.contains(output)) node.fail("its output \"{}\" is a graph output; a Pad must feed a Conv or an AveragePool", output);
    for (const int reader : consumers_[output]) {
      const std::string& type = graph_.node(reader).op_type();
      if (type != "Conv" && type != "AveragePool") {
        node.fail("is read by \"{}\" ({}); a Pad is supported only where Conv or AveragePool read it (it becomes their padding)",
                  Node(graph_.node(reader), reader, file_).name, type);
      }
    }
    check_new_name(node, output);
    activations_[output] = x;
    padded_[output] = {static_cast<int>(pads[2]), static_cast<int>(pads[3]), static_cast<int>(pads[6]), static_cast<int>(pads[7])};
  }

  // A window reading a Pad's output takes its padding on top of its own.
  void add_explicit_padding(const Node& node, Window& window) const {
    const auto found = padded_.find(node.input(0));
    if (found == padded_.end()) return;
    if (const std::string auto_pad = node.string_attr("auto_pad", "NOTSET"); auto_pad != "NOTSET" && auto_pad != "VALID") {
      node.fail("reads the zero-padded \"{}\" with auto_pad; SAME padding of padded input is not supported", node.input(0));
    }
    const Padding& p = found->second;
    for (auto [side, extra] : {std::pair{&window.pad_top, p.top}, std::pair{&window.pad_left, p.left},
                               std::pair{&window.pad_bottom, p.bottom}, std::pair{&window.pad_right, p.right}}) {
      if (int64_t{*side} + extra > kMaxGeometry) node.fail("padding of \"{}\" is out of range", node.input(0));
      *side += extra;
    }
  }

  // The mean over height and width (torch's x.mean([2, 3])): a global average pool, of rank 2
  // unless the reduced axes are kept.
  void reduce_mean(const Node& node) {
    node.expect_inputs(1, 1);
    const Value x = activation(node, 0, {4});
    std::vector<int64_t> axes = node.ints_attr("axes");
    for (int64_t& axis : axes) axis = axis < 0 ? axis + x.rank : axis;
    std::sort(axes.begin(), axes.end());
    if (axes != std::vector<int64_t>{2, 3}) {
      node.fail("reduces axes [{}]; only the mean over height and width (axes 2 and 3) is supported",
                join(node.ints_attr("axes"), ", "));
    }
    emit(node, unary_op(OpKind::GlobalAvgPool, x), node.int_attr("keepdims", 1) != 0 ? 4 : 2);
  }

  void global_avgpool(const Node& node) {
    node.expect_inputs(1, 1);
    emit(node, unary_op(OpKind::GlobalAvgPool, activation(node, 0, {4})), 4);
  }

  // Gemm (and MatMul) with weight [out, in]; a bias-free one absorbs a following Add of a
  // constant vector, torch's export of a linear layer as MatMul + Add.
  void fully_connected(const Node& node, Value x, FloatTensor weight, int64_t out, Buffer bias) {
    Op op = unary_op(OpKind::Gemm, x);
    op.out_channels = out;
    op.weight = std::move(weight.values);
    std::string output_name = node.output();
    if (!bias) {
      if (const std::optional<int> reader = sole_reader(output_name)) {
        const int next_index = *reader;
        const Node next(graph_.node(next_index), next_index, file_);
        if (next.proto.op_type() == "Add" && next.proto.domain().empty() && next.proto.input_size() == 2) {
          const int other = next.proto.input(0) == output_name ? 1 : 0;
          if (constants_.contains(next.proto.input(other))) {
            bias = floats(next, other).values;
            if (static_cast<int64_t>(bias->size()) != out) {
              next.fail("bias \"{}\" has {} values, expected {} (one per output feature)", next.proto.input(other),
                        bias->size(), out);
            }
            absorbed_.insert(next_index);
            output_name = next.output();
          }
        }
      }
    }
    op.has_bias = bias != nullptr;
    op.bias = std::move(bias);
    emit(node, std::move(op), 2, output_name);
  }

  static Buffer transposed(const FloatTensor& matrix) {
    const auto rows = static_cast<size_t>(matrix.dims[0]);
    const auto cols = static_cast<size_t>(matrix.dims[1]);
    auto out = std::make_shared<std::vector<float>>(matrix.size());
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c = 0; c < cols; ++c) (*out)[c * rows + r] = (*matrix.values)[r * cols + c];
    }
    return out;
  }

  // The weight of a fully-connected layer: a constant matrix whose input side must match the
  // activation's features.
  FloatTensor fc_weight(const Node& node, Value x, bool out_first, int64_t& out) {
    FloatTensor weight = floats(node, 1);
    if (weight.dims.size() != 2) node.fail("weight \"{}\" is {}; expected a matrix", node.input(1), dims_str(weight.dims));
    const int64_t in = out_first ? weight.dims[1] : weight.dims[0];
    out = out_first ? weight.dims[0] : weight.dims[1];
    const Shape& shape = builder_.shape(x.id);
    if (in != shape.image_elements()) {
      node.fail("weight \"{}\" is {}, which expects {} input features; the input {} has {}", node.input(1),
                dims_str(weight.dims), in, shape.str(), shape.image_elements());
    }
    if (!out_first) weight.values = transposed(weight);
    return weight;
  }

  void gemm(const Node& node) {
    node.expect_inputs(2, 3);
    if (node.int_attr("transA", 0) != 0) node.fail("transA=1 is not supported");
    const int64_t trans_b = node.int_attr("transB", 0);
    if (trans_b != 0 && trans_b != 1) node.fail("transB must be 0 or 1, got {}", trans_b);
    const float alpha = node.float_attr("alpha", 1.0f), beta = node.float_attr("beta", 1.0f);
    if (alpha != 1.0f || (node.has_input(2) && beta != 1.0f)) {
      node.fail("alpha={} beta={} are not supported (expected 1 and 1)", alpha, beta);
    }
    const Value x = activation(node, 0, {2});
    int64_t out = 0;
    FloatTensor weight = fc_weight(node, x, trans_b == 1, out);
    Buffer bias;
    if (node.has_input(2)) {
      bias = floats(node, 2).values;
      if (static_cast<int64_t>(bias->size()) != out) {
        node.fail("bias \"{}\" has {} values, expected {} (one per output feature)", node.input(2), bias->size(), out);
      }
    }
    fully_connected(node, x, std::move(weight), out, std::move(bias));
  }

  void matmul(const Node& node) {
    node.expect_inputs(2, 2);
    const Value x = activation(node, 0, {2});
    int64_t out = 0;
    FloatTensor weight = fc_weight(node, x, false, out);
    fully_connected(node, x, std::move(weight), out, nullptr);
  }

  void binary(const Node& node, OpKind kind) {
    node.expect_inputs(2, 2);
    if (is_int_constant(node.input(0)) && is_int_constant(node.input(1))) {
      fold_arithmetic(node);
      return;
    }
    for (int i = 0; i < 2; ++i) {
      if (constants_.contains(node.input(i))) {
        node.fail("operand \"{}\" is a constant; only {} of two activations is supported", node.input(i),
                  node.proto.op_type());
      }
    }
    const Value a = activation(node, 0), b = activation(node, 1);
    // The IR aligns dimensions as NCHW; ONNX aligns trailing dimensions, so ranks must agree.
    if (a.rank != b.rank) node.fail("operands have ranks {} and {}; broadcasting across ranks is not supported", a.rank, b.rank);
    Op op;
    op.kind = kind;
    op.inputs = {a.id, b.id};
    emit(node, std::move(op), a.rank);
  }

  void concat(const Node& node) {
    node.expect_inputs(1, INT_MAX);
    if (is_int_constant(node.input(0))) {
      fold_concat(node);
      return;
    }
    Op op;
    op.kind = OpKind::Concat;
    const int rank = activation(node, 0).rank;
    for (int i = 0; i < node.proto.input_size(); ++i) {
      const Value part = activation(node, i, {rank});
      op.inputs.push_back(part.id);
    }
    if (!node.attribute("axis", onnx::AttributeProto::INT)) node.fail("attribute \"axis\" is required");
    const int64_t axis = node.axis_attr(0, rank);
    if (axis != 1) node.fail("only concatenation along channels (axis 1) is supported, got axis {}", axis);
    emit(node, std::move(op), rank);
  }

  void elementwise(const Node& node, Activation act) {
    node.expect_inputs(1, 1);
    emit_activation(node, act);
  }

  // x * gate(x) is one activation where the product has a name: torch exports SiLU as x * sigmoid(x)
  // (efficientnet) and, before opset 14, hardswish as x * hardsigmoid(x) with alpha 1/6 (mobilenet_v3).
  // The Mul is taken in, so that the activation can be fused into x's convolution. A gate read by
  // anything else (a squeeze-and-excitation Mul of another tensor) stays a gate.
  void gate(const Node& node, Activation gate, ActKind gated) {
    node.expect_inputs(1, 1);
    const std::string& output = node.output();
    if (const std::optional<int> reader = sole_reader(output); gated != ActKind::None && reader) {
      const onnx::NodeProto& next = graph_.node(*reader);
      if (next.op_type() == "Mul" && next.domain().empty() && next.input_size() == 2 && next.output_size() == 1) {
        const std::string& other = next.input(0) == output ? next.input(1) : next.input(0);
        if (other == node.input(0)) {
          absorbed_.insert(*reader);
          emit_activation(node, {gated}, next.output(0));
          return;
        }
      }
    }
    emit_activation(node, gate);
  }

  void emit_activation(const Node& node, Activation act) { emit_activation(node, act, node.output()); }
  void emit_activation(const Node& node, Activation act, const std::string& output_name) {
    const Value x = activation(node, 0);
    Op op = unary_op(OpKind::Activation, x);
    op.activation = act;
    emit(node, std::move(op), x.rank, output_name);
  }

  // The index of the one node that reads `value`, unless other nodes read it too or it is a graph
  // output: where a node can take that reader in (a bias Add, the Mul of x * gate(x)).
  std::optional<int> sole_reader(const std::string& value) const {
    const auto uses = consumers_.find(value);
    if (uses == consumers_.end() || uses->second.size() != 1 || graph_outputs_.contains(value)) return std::nullopt;
    return uses->second.front();
  }

  // Bounds are attributes before opset 11 and optional constant inputs from then on. A missing
  // bound becomes the largest finite float, which clips nothing and stays representable in JSON.
  void clip(const Node& node) {
    constexpr float lowest = std::numeric_limits<float>::lowest();
    constexpr float highest = std::numeric_limits<float>::max();
    Activation act{ActKind::Clip, lowest, highest};
    if (opset_ < 11) {
      node.expect_inputs(1, 1);
      act.lo = node.float_attr("min", lowest);
      act.hi = node.float_attr("max", highest);
    } else {
      node.expect_inputs(1, 3);
      if (node.has_input(1)) act.lo = scalar(node, 1);
      if (node.has_input(2)) act.hi = scalar(node, 2);
    }
    if (!(act.lo <= act.hi)) node.fail("min {} exceeds max {}", act.lo, act.hi);
    emit_activation(node, act);
  }

  // y = (x - mean) * gamma / sqrt(var + eps) + beta, kept as a per-channel scale and shift that
  // normalize() folds into the preceding convolution.
  void batchnorm(const Node& node) {
    node.expect_inputs(5, 5);
    node.expect_single_output("training-mode statistics; export the model in eval mode");
    if (node.int_attr("training_mode", 0) != 0) node.fail("training_mode=1 is not supported; export in eval mode");
    if (node.int_attr("spatial", 1) != 1) node.fail("spatial=0 (per-element statistics) is not supported");
    const Value x = activation(node, 0, {2, 4});
    const int64_t channels = builder_.shape(x.id).c;
    const double epsilon = node.float_attr("epsilon", 1e-5f);
    std::array<Buffer, 4> params;  // gamma, beta, mean, var
    for (int i = 0; i < 4; ++i) {
      params[static_cast<size_t>(i)] = floats(node, i + 1).values;
      if (static_cast<int64_t>(params[static_cast<size_t>(i)]->size()) != channels) {
        node.fail("\"{}\" has {} values, expected {} (one per channel)", node.input(i + 1),
                  params[static_cast<size_t>(i)]->size(), channels);
      }
    }
    const auto& [gamma, beta, mean, var] = params;
    auto scale = std::make_shared<std::vector<float>>(static_cast<size_t>(channels));
    auto shift = std::make_shared<std::vector<float>>(static_cast<size_t>(channels));
    for (size_t c = 0; c < scale->size(); ++c) {
      const double denominator = static_cast<double>((*var)[c]) + epsilon;
      if (!(denominator > 0.0)) node.fail("channel {}: variance + epsilon = {} is not positive", c, denominator);
      const double s = (*gamma)[c] / std::sqrt(denominator);
      (*scale)[c] = static_cast<float>(s);
      (*shift)[c] = static_cast<float>((*beta)[c] - (*mean)[c] * s);
    }
    Op op = unary_op(OpKind::BatchNorm, x);
    op.weight = std::move(scale);
    op.bias = std::move(shift);
    emit(node, std::move(op), x.rank);
  }

  void flatten(const Node& node) {
    node.expect_inputs(1, 1);
    const Value x = activation(node, 0);
    const int64_t axis = node.axis_attr(1, x.rank);
    if (axis != 1) node.fail("only flattening from axis 1 to (N, C*H*W) is supported, got axis {}", axis);
    emit(node, unary_op(OpKind::Flatten, x), 2);
  }

  // Only the reshape that flattens an image to (N, C*H*W), as torch writes x.view(N, -1).
  void reshape(const Node& node) {
    node.expect_inputs(2, 2);
    if (const auto found = shuffles_.find(node.input(0)); found != shuffles_.end() && found->second.transposed) {
      end_channel_shuffle(node, found->second);
      return;
    }
    const Value x = activation(node, 0);
    const std::vector<int64_t> target = ints(node, 1);
    const Shape& in = builder_.shape(x.id);
    const int64_t features = in.image_elements();
    // With allowzero=0 (the default), a 0 copies the input's dimension.
    const bool zero_copies = node.int_attr("allowzero", 0) == 0;
    const auto flattens = [&] {
      if (target.size() != 2) return false;
      const bool keeps_batch = target[0] == in.n || (target[0] == 0 && zero_copies);
      return (keeps_batch && (target[1] == features || target[1] == -1)) || (target[0] == -1 && target[1] == features);
    };
    if (target.size() == 5 && x.rank == 4) {
      begin_channel_shuffle(node, x, target);
      return;
    }
    if (!flattens()) {
      node.fail("reshape of {} to [{}] is not supported; only flattening to [N, -1] or [N, {}] and the channel "
                "shuffle [N, g, C/g, H, W] are",
                in.str(), join(target, ", "), features);
    }
    emit(node, unary_op(OpKind::Flatten, x), 2);
  }

  // A Reshape target with its 0s (copies of the input's dimension) and one -1 (what is left) resolved.
  static std::vector<int64_t> resolve_target(const Node& node, std::vector<int64_t> target,
                                             const std::vector<int64_t>& in_dims) {
    const bool zero_copies = node.int_attr("allowzero", 0) == 0;
    int64_t known = 1, elements = 1;
    for (const int64_t d : in_dims) elements *= d;
    int inferred = -1;
    for (size_t k = 0; k < target.size(); ++k) {
      if (target[k] == 0 && zero_copies && k < in_dims.size()) target[k] = in_dims[k];
      if (target[k] == -1 && inferred < 0) {
        inferred = static_cast<int>(k);
        continue;
      }
      if (target[k] < 1 || target[k] > kMaxElements) node.fail("reshape target [{}] is invalid", join(target, ", "));
      known *= target[k];
      if (known > kMaxElements) node.fail("reshape target [{}] is invalid", join(target, ", "));
    }
    if (inferred >= 0) {
      if (elements % known != 0) node.fail("reshape target [{}] does not divide the input's {} elements", join(target, ", "), elements);
      target[static_cast<size_t>(inferred)] = elements / known;
    }
    return target;
  }

  // ShuffleNet's channel shuffle, as torch exports x.view(N, g, C/g, H, W).transpose(1, 2)
  // .reshape(N, C, H, W): this Reshape, a Transpose and a Reshape back become one op. The 5-D
  // values in between are not IR tensors; they wait in shuffles_ for the next step of the pattern.
  static constexpr std::string_view kShufflePattern =
      "a 5-D value is supported only inside a channel shuffle: Reshape to [N, g, C/g, H, W], Transpose with perm "
      "[0, 2, 1, 3, 4], Reshape to [N, C, H, W]";

  void begin_channel_shuffle(const Node& node, Value x, const std::vector<int64_t>& raw_target) {
    const Shape& in = builder_.shape(x.id);
    const std::vector<int64_t> target = resolve_target(node, raw_target, {in.n, in.c, in.h, in.w});
    if (target[0] != in.n || target[3] != in.h || target[4] != in.w || target[1] * target[2] != in.c) {
      node.fail("reshape of {} to [{}] does not split the channels as [N, g, C/g, H, W]{}; {}", in.str(),
                join(raw_target, ", "),
                target[0] != in.n || target[3] != in.h || target[4] != in.w
                    ? " (the file fixes batch, height and width at export: run it at that size)"
                    : "",
                kShufflePattern);
    }
    expect_sole_reader(node, "Transpose");
    check_new_name(node, node.output());
    shuffles_[node.output()] = {x, target[1], false};
  }

  void transpose(const Node& node) {
    node.expect_inputs(1, 1);
    const auto found = shuffles_.find(node.input(0));
    if (found == shuffles_.end() || found->second.transposed) {
      node.fail("a Transpose is supported only inside a channel shuffle (Reshape to [N, g, C/g, H, W], Transpose "
                "with perm [0, 2, 1, 3, 4], Reshape to [N, C, H, W])");
    }
    if (node.ints_attr("perm") != std::vector<int64_t>{0, 2, 1, 3, 4}) {
      node.fail("perm [{}] is not a channel shuffle's [0, 2, 1, 3, 4]", join(node.ints_attr("perm"), ", "));
    }
    expect_sole_reader(node, "Reshape");
    check_new_name(node, node.output());
    shuffles_[node.output()] = {found->second.input, found->second.groups, true};
  }

  void end_channel_shuffle(const Node& node, const PendingShuffle& shuffle) {
    const Shape& in = builder_.shape(shuffle.input.id);
    const std::vector<int64_t> in_dims = {in.n, in.c, in.h, in.w};
    const std::vector<int64_t> target =
        resolve_target(node, ints(node, 1), {in.n, in.c / shuffle.groups, shuffle.groups, in.h, in.w});
    if (target != in_dims) {
      node.fail("reshapes the shuffled channels to [{}], not back to {}; {}", join(target, ", "), in.str(), kShufflePattern);
    }
    Op op = unary_op(OpKind::ChannelShuffle, shuffle.input);
    op.groups = static_cast<int>(shuffle.groups);
    emit(node, std::move(op), 4);
  }

  void expect_sole_reader(const Node& node, std::string_view type) const {
    const std::optional<int> reader = sole_reader(node.output());
    if (!reader || graph_.node(*reader).op_type() != type || !graph_.node(*reader).domain().empty()) {
      node.fail("{}; its output is not read by one {} alone", kShufflePattern, type);
    }
  }

  // A value's dimensions as ONNX sees them: NCHW, or (N, C) for rank 2.
  std::vector<int64_t> onnx_dims(Value x) const {
    const Shape& s = builder_.shape(x.id);
    return x.rank == 4 ? std::vector<int64_t>{s.n, s.c, s.h, s.w} : std::vector<int64_t>{s.n, s.c};
  }

  // ONNX's rule for Slice bounds and Shape's start/end: a negative index counts from the end, and
  // the result is clamped to [0, size].
  static int64_t clamp_index(int64_t at, int64_t size) { return std::clamp<int64_t>(at < 0 ? at + size : at, 0, size); }

  // A contiguous range of channels, as torch exports x.chunk(2, dim=1) (ShuffleNet's split).
  void slice(const Node& node) {
    const Value x = activation(node, 0, {2, 4});
    const Shape& in = builder_.shape(x.id);
    const std::vector<int64_t> dims = onnx_dims(x);
    std::vector<int64_t> starts, ends, axes, steps;
    if (opset_ < 10) {
      node.expect_inputs(1, 1);
      starts = node.ints_attr("starts");
      ends = node.ints_attr("ends");
      axes = node.ints_attr("axes");
    } else {
      node.expect_inputs(3, 5);
      starts = ints(node, 1);
      ends = ints(node, 2);
      if (node.has_input(3)) axes = ints(node, 3);
      if (node.has_input(4)) steps = ints(node, 4);
    }
    if (axes.empty()) {
      for (size_t k = 0; k < starts.size(); ++k) axes.push_back(static_cast<int64_t>(k));
    }
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
      node.fail("starts, ends, axes and steps have {}, {}, {} and {} values; they must agree", starts.size(),
                ends.size(), axes.size(), steps.size());
    }
    const auto rank = static_cast<int64_t>(dims.size());
    int64_t begin = 0, end = in.c;
    for (size_t k = 0; k < axes.size(); ++k) {
      const int64_t axis = axes[k] < 0 ? axes[k] + rank : axes[k];
      if (axis < 0 || axis >= rank) node.fail("axis {} is out of range for a rank-{} input", axes[k], rank);
      if (steps[k] != 1) node.fail("step {} on axis {} is not supported; only contiguous slices are", steps[k], axis);
      const int64_t size = dims[static_cast<size_t>(axis)];
      const int64_t first = clamp_index(starts[k], size), last = clamp_index(ends[k], size);
      if (axis == 1) {
        begin = first;
        end = last;
      } else if (first != 0 || last != size) {
        node.fail("slices axis {} ([{}, {}) of {}); only slices of channels (axis 1) are supported", axis, first, last, size);
      }
    }
    if (end <= begin) node.fail("takes no channels ([{}, {}) of {})", begin, end, in.c);
    Op op = unary_op(OpKind::Slice, x);
    op.channel_offset = begin;
    op.out_channels = end - begin;
    emit(node, std::move(op), x.rank);
  }

  // ---- shape arithmetic: torch computes split points from x.size(), which is fixed at import ----

  void shape_of(const Node& node) {
    node.expect_inputs(1, 1);
    const std::vector<int64_t> dims = onnx_dims(activation(node, 0));
    // Opset 15's start and end take a range of the dimensions.
    const auto rank = static_cast<int64_t>(dims.size());
    const int64_t first = clamp_index(node.int_attr("start", 0), rank);
    const int64_t last = std::max(first, clamp_index(node.int_attr("end", rank), rank));
    define_ints(node, {last - first}, {dims.begin() + first, dims.begin() + last});
  }

  // A Cast that changes nothing: an integer shape value to INT64 (torch writes them around the
  // divisions of a dynamic-axes export), or an activation to FLOAT.
  void cast(const Node& node) {
    node.expect_inputs(1, 1);
    const int64_t to = node.int_attr("to", -1);
    const std::string& source = node.input(0);
    if (is_int_constant(source) && to == onnx::TensorProto::INT64) {
      check_new_name(node, node.output());
      constants_[node.output()] = constants_.at(source);
      return;
    }
    if (activations_.contains(source) && to == onnx::TensorProto::FLOAT) {
      const Value x = activation(node, 0);
      emit(node, unary_op(OpKind::Identity, x), x.rank);
      return;
    }
    node.fail("casts \"{}\" to {}; only integer shape values to INT64 and activations to FLOAT (no-ops) are supported",
              source, type_name(static_cast<int32_t>(to)));
  }

  void gather(const Node& node) {
    node.expect_inputs(2, 2);
    if (!is_int_constant(node.input(0))) {
      node.fail("gathers from \"{}\"; Gather is supported only on constant integers (shape computations)",
                node.input(0));
    }
    const IntTensor data = int_tensor(node, 0);
    const IntTensor indices = int_tensor(node, 1);
    if (data.dims.size() != 1) node.fail("gathers from a {} tensor; only 1-D shape values are supported", dims_str(data.dims));
    if (node.axis_attr(0, 1) != 0) node.fail("only axis 0 is supported");
    const auto size = static_cast<int64_t>(data.values.size());
    std::vector<int64_t> values;
    for (const int64_t index : indices.values) {
      if (index < -size || index >= size) node.fail("index {} is out of range for {} values", index, size);
      values.push_back(data.values[static_cast<size_t>(index < 0 ? index + size : index)]);
    }
    define_ints(node, indices.dims, values);
  }

  void unsqueeze(const Node& node) {
    node.expect_inputs(1, opset_ < 13 ? 1 : 2);
    if (!is_int_constant(node.input(0))) {
      node.fail("unsqueezes \"{}\"; Unsqueeze is supported only on constant integers (shape computations)",
                node.input(0));
    }
    const IntTensor x = int_tensor(node, 0);
    const std::vector<int64_t> axes = opset_ < 13 ? node.ints_attr("axes") : ints(node, 1);
    const auto rank = static_cast<int64_t>(x.dims.size() + axes.size());
    std::vector<bool> inserted(static_cast<size_t>(rank), false);
    for (const int64_t axis : axes) {
      const int64_t at = axis < 0 ? axis + rank : axis;
      if (at < 0 || at >= rank || inserted[static_cast<size_t>(at)]) node.fail("axes [{}] are invalid", join(axes, ", "));
      inserted[static_cast<size_t>(at)] = true;
    }
    std::vector<int64_t> dims;
    auto kept = x.dims.begin();
    for (const bool one : inserted) dims.push_back(one ? 1 : *kept++);
    define_ints(node, dims, x.values);
  }

  void fold_concat(const Node& node) {
    if (node.axis_attr(0, 1) != 0) node.fail("only axis 0 is supported when concatenating constant integers");
    std::vector<int64_t> values;
    for (int i = 0; i < node.proto.input_size(); ++i) {
      if (!is_int_constant(node.input(i))) {
        node.fail("mixes constant integers with \"{}\"; only all-constant shape values can be concatenated on axis 0",
                  node.input(i));
      }
      const IntTensor part = int_tensor(node, i);
      if (part.dims.size() != 1) node.fail("input \"{}\" is {}, expected 1-D", node.input(i), dims_str(part.dims));
      values.insert(values.end(), part.values.begin(), part.values.end());
    }
    define_ints(node, {static_cast<int64_t>(values.size())}, values);
  }

  // Add, Sub, Mul or Div of two constant integer tensors (equal shapes, or one of them a single value).
  void fold_arithmetic(const Node& node) {
    node.expect_inputs(2, 2);
    const std::string& type = node.proto.op_type();
    for (int i = 0; i < 2; ++i) {
      if (!is_int_constant(node.input(i))) {
        node.fail("operand \"{}\" is not a constant integer; {} is supported here only on shape values", node.input(i),
                  type);
      }
    }
    const IntTensor a = int_tensor(node, 0), b = int_tensor(node, 1);
    if (a.values.size() != b.values.size() && a.values.size() != 1 && b.values.size() != 1) {
      node.fail("operands {} and {} do not broadcast", dims_str(a.dims), dims_str(b.dims));
    }
    const size_t count = std::max(a.values.size(), b.values.size());
    std::vector<int64_t> values(count);
    for (size_t k = 0; k < count; ++k) {
      const int64_t l = a.values[a.values.size() == 1 ? 0 : k], r = b.values[b.values.size() == 1 ? 0 : k];
      bool overflow = false;
      if (type == "Add") {
        overflow = __builtin_add_overflow(l, r, &values[k]);
      } else if (type == "Sub") {
        overflow = __builtin_sub_overflow(l, r, &values[k]);
      } else if (type == "Mul") {
        overflow = __builtin_mul_overflow(l, r, &values[k]);
      } else if (r == 0) {
        node.fail("{} / 0 is undefined", l);
      } else if (l == INT64_MIN && r == -1) {
        overflow = true;
      } else {
        values[k] = l / r;
      }
      if (overflow) node.fail("{} {} {} overflows int64", l, type, r);
    }
    define_ints(node, a.values.size() >= b.values.size() ? a.dims : b.dims, values);
  }

  // Over channels only: with H = W = 1 every opset's axis convention gives the same result.
  void softmax(const Node& node) {
    node.expect_inputs(1, 1);
    const Value x = activation(node, 0);
    const Shape& in = builder_.shape(x.id);
    const int64_t axis = node.axis_attr(opset_ < 13 ? 1 : -1, x.rank);
    if (axis != 1 || in.h != 1 || in.w != 1) {
      node.fail("only a softmax over channels of an (N, C) or (N, C, 1, 1) input is supported (input {}, axis {})",
                in.str(), axis);
    }
    emit(node, unary_op(OpKind::Softmax, x), x.rank);
  }

  void identity(const Node& node, int max_inputs) {
    node.expect_inputs(1, max_inputs);
    const std::string& source = node.input(0);
    if (const auto found = constants_.find(source); found != constants_.end()) {
      check_new_name(node, node.output());
      constants_[node.output()] = found->second;
      return;
    }
    const Value x = activation(node, 0);
    emit(node, unary_op(OpKind::Identity, x), x.rank);
  }

  void constant(const Node& node) {
    node.expect_inputs(0, 0);
    if (node.proto.attribute_size() != 1) node.fail("expected exactly one value attribute");
    const onnx::AttributeProto& attr = node.proto.attribute(0);
    const onnx::TensorProto* tensor = nullptr;
    if (attr.name() == "value" && attr.type() == onnx::AttributeProto::TENSOR) {
      tensor = &attr.t();
    } else {
      onnx::TensorProto& made = owned_.emplace_back();
      if (attr.name() == "value_float" && attr.type() == onnx::AttributeProto::FLOAT) {
        made.set_data_type(onnx::TensorProto::FLOAT);
        made.add_float_data(attr.f());
      } else if (attr.name() == "value_floats" && attr.type() == onnx::AttributeProto::FLOATS) {
        made.set_data_type(onnx::TensorProto::FLOAT);
        made.add_dims(attr.floats_size());
        made.mutable_float_data()->CopyFrom(attr.floats());
      } else if (attr.name() == "value_int" && attr.type() == onnx::AttributeProto::INT) {
        made.set_data_type(onnx::TensorProto::INT64);
        made.add_int64_data(attr.i());
      } else if (attr.name() == "value_ints" && attr.type() == onnx::AttributeProto::INTS) {
        made.set_data_type(onnx::TensorProto::INT64);
        made.add_dims(attr.ints_size());
        made.mutable_int64_data()->CopyFrom(attr.ints());
      } else {
        node.fail("attribute \"{}\" ({}) is not supported; expected value, value_float(s) or value_int(s)", attr.name(),
                  onnx::AttributeProto::AttributeType_Name(attr.type()));
      }
      made.set_name(node.output());
      tensor = &made;
    }
    check_new_name(node, node.output());
    constants_[node.output()] = tensor;
  }

  const std::string file_;
  const onnx::GraphProto& graph_;
  const ModelOptions options_;
  int64_t opset_ = 0;
  GraphBuilder builder_;
  std::unordered_map<std::string, Value> activations_;
  std::unordered_map<std::string, const onnx::TensorProto*> constants_;
  std::unordered_map<const onnx::TensorProto*, Buffer> decoded_;
  std::deque<onnx::TensorProto> owned_;  // tensors made from Constant's value_float(s)/value_int(s)
  std::unordered_map<std::string, std::vector<int>> consumers_;  // value name -> indices of reading nodes
  std::unordered_set<std::string> graph_outputs_;
  std::unordered_set<int> absorbed_;  // Adds taken in as a fully-connected layer's bias, Muls of x * gate(x)
  std::unordered_map<std::string, Padding> padded_;  // Pad outputs: the padded value is the input's
  std::unordered_map<std::string, PendingShuffle> shuffles_;  // the 5-D values inside channel shuffles
};

}  // namespace

Graph import_onnx(const std::filesystem::path& path, const ModelOptions& options) {
  const std::string file = path.string();
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  if (error) fail("{}: cannot open: {}", file, error.message());
  if (size > static_cast<uintmax_t>(INT_MAX)) {
    fail("{}: cannot open: {} bytes exceeds protobuf's 2 GiB limit (external data is not supported)", file, size);
  }
  if (options.batch < 1) fail("{}: batch must be >= 1, got {}", file, options.batch);
  std::ifstream stream(path, std::ios::binary);
  if (!stream) fail("{}: cannot open: {}", file, std::generic_category().message(errno));
  onnx::ModelProto model;
  // A protobuf parses from many byte strings; a model also needs an IR version and a graph.
  if (!model.ParseFromIstream(&stream) || model.ir_version() <= 0 || !model.has_graph()) {
    fail("{}: not a valid ONNX model (the file does not parse as an ONNX ModelProto)", file);
  }
  return Importer(path, model, options).import();
}

}  // namespace occam
