// ONNX import on small models built here with the protobuf classes: one test per error the
// importer promises, and one per operator form whose translation is not a plain rename.
#include "occam/error.hpp"
#include "occam/model.hpp"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <unistd.h>

#include <bit>
#include <cmath>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <random>

namespace occam {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSymbolic = -1;

// Writes a ModelProto the way an exporter would: one image input, initializers, nodes in order.
class OnnxModel {
public:
  explicit OnnxModel(int opset = 13) {
    model_.set_ir_version(8);
    model_.set_producer_name("occam-test");
    auto* set = model_.add_opset_import();
    set->set_domain("");
    set->set_version(opset);
    graph()->set_name("test");
  }

  onnx::GraphProto* graph() { return model_.mutable_graph(); }
  onnx::ModelProto& proto() { return model_; }

  // kSymbolic marks a dimension the file leaves symbolic.
  OnnxModel& input(const std::string& name, std::initializer_list<int64_t> dims) {
    auto* value = graph()->add_input();
    value->set_name(name);
    auto* tensor = value->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) {
      auto* dim = tensor->mutable_shape()->add_dim();
      if (d == kSymbolic) {
        dim->set_dim_param("sym");
      } else {
        dim->set_dim_value(d);
      }
    }
    return *this;
  }

  OnnxModel& output(const std::string& name) {
    graph()->add_output()->set_name(name);
    return *this;
  }

  // Floats as little-endian raw_data (what torch writes) or in float_data.
  OnnxModel& weights(const std::string& name, std::vector<int64_t> dims, const std::vector<float>& values,
                     bool raw = true) {
    auto* tensor = graph()->add_initializer();
    tensor->set_name(name);
    tensor->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) tensor->add_dims(d);
    if (raw) {
      std::string bytes;
      for (float v : values) {
        const auto word = std::bit_cast<uint32_t>(v);
        for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<char>((word >> (8 * b)) & 0xff));
      }
      tensor->set_raw_data(bytes);
    } else {
      for (float v : values) tensor->add_float_data(v);
    }
    return *this;
  }

  OnnxModel& int64s(const std::string& name, const std::vector<int64_t>& values) {
    auto* tensor = graph()->add_initializer();
    tensor->set_name(name);
    tensor->set_data_type(onnx::TensorProto::INT64);
    tensor->add_dims(static_cast<int64_t>(values.size()));
    for (int64_t v : values) tensor->add_int64_data(v);
    return *this;
  }

  onnx::NodeProto& node(const std::string& op_type, std::initializer_list<std::string> inputs,
                        std::initializer_list<std::string> outputs, const std::string& name = "") {
    auto* node = graph()->add_node();
    node->set_op_type(op_type);
    node->set_name(name);
    for (const auto& in : inputs) node->add_input(in);
    for (const auto& out : outputs) node->add_output(out);
    return *node;
  }

  fs::path save(const fs::path& path) const {
    std::ofstream file(path, std::ios::binary);
    EXPECT_TRUE(model_.SerializeToOstream(&file));
    return path;
  }

private:
  onnx::ModelProto model_;
};

void set_int(onnx::NodeProto& node, const std::string& name, int64_t value) {
  auto* attr = node.add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(value);
}

void set_ints(onnx::NodeProto& node, const std::string& name, std::initializer_list<int64_t> values) {
  auto* attr = node.add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr->add_ints(v);
}

void set_float(onnx::NodeProto& node, const std::string& name, float value) {
  auto* attr = node.add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::FLOAT);
  attr->set_f(value);
}

void set_string(onnx::NodeProto& node, const std::string& name, const std::string& value) {
  auto* attr = node.add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::STRING);
  attr->set_s(value);
}

onnx::NodeProto& constant_scalar(OnnxModel& model, const std::string& output, float value) {
  auto& node = model.node("Constant", {}, {output});
  auto* attr = node.add_attribute();
  attr->set_name("value");
  attr->set_type(onnx::AttributeProto::TENSOR);
  attr->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
  attr->mutable_t()->add_float_data(value);
  return node;
}

std::vector<float> iota(size_t count, float start = 0.0f, float step = 1.0f) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = start + step * static_cast<float>(i);
  return values;
}

class OnnxImport : public ::testing::Test {
protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / fmt::format("occam-onnx-{}-{}", info->name(), ::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file(const std::string& name) const { return dir_ / name; }
  Graph import(const OnnxModel& model, const ModelOptions& options = {}) {
    return import_onnx(model.save(file("model.onnx")), options);
  }

  // Expects import to fail with a message that starts with the file path and contains every
  // fragment.
  void expect_error(const fs::path& path, std::initializer_list<std::string_view> fragments,
                    const ModelOptions& options = {}) {
    try {
      import_onnx(path, options);
      ADD_FAILURE() << "expected an error importing " << path;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_TRUE(message.starts_with(path.string() + ": ")) << message;
      for (std::string_view fragment : fragments) {
        EXPECT_NE(message.find(fragment), std::string::npos) << "\"" << fragment << "\" not in: " << message;
      }
    }
  }
  void expect_error(const OnnxModel& model, std::initializer_list<std::string_view> fragments,
                    const ModelOptions& options = {}) {
    expect_error(model.save(file("model.onnx")), fragments, options);
  }

private:
  fs::path dir_;
};

// Input 1x3x8x8 -> Conv 3->4, 3x3, pad 1 -> "y".
OnnxModel small_conv_model() {
  OnnxModel model;
  model.input("x", {1, 3, 8, 8}).output("y");
  model.weights("w", {4, 3, 3, 3}, iota(4 * 3 * 3 * 3, -1.0f, 0.01f));
  model.weights("b", {4}, {0.1f, 0.2f, 0.3f, 0.4f});
  auto& conv = model.node("Conv", {"x", "w", "b"}, {"y"}, "conv");
  set_ints(conv, "pads", {1, 1, 1, 1});
  set_ints(conv, "kernel_shape", {3, 3});
  return model;
}

TEST_F(OnnxImport, ConvWithBiasKeepsWeightsAndShape) {
  const Graph g = import(small_conv_model());
  ASSERT_EQ(g.ops.size(), 1u);
  const Op& conv = g.ops[0];
  EXPECT_EQ(conv.kind, OpKind::Conv);
  EXPECT_EQ(conv.name, "conv");
  EXPECT_EQ(conv.window, Window::square(3, 1, 1));
  EXPECT_TRUE(conv.has_bias);
  EXPECT_EQ(*conv.weight, iota(4 * 3 * 3 * 3, -1.0f, 0.01f));
  EXPECT_EQ(*conv.bias, (std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f}));
  EXPECT_EQ(g.output_of(conv).shape, (Shape{1, 4, 8, 8}));
  EXPECT_EQ(g.output_of(conv).name, "y");
  EXPECT_EQ(g.name, "model");
  EXPECT_EQ(g.source, file("model.onnx").string());
}

TEST_F(OnnxImport, FloatDataAndRawDataGiveTheSameWeights) {
  OnnxModel model;
  model.input("x", {1, 2, 4, 4}).output("y");
  model.weights("w", {3, 2, 1, 1}, {1, 2, 3, 4, 5, 6}, false);
  model.node("Conv", {"x", "w"}, {"y"});
  const Graph g = import(model);
  EXPECT_EQ(*g.ops[0].weight, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_FALSE(g.ops[0].has_bias);
}

TEST_F(OnnxImport, GroupedDilatedStridedConv) {
  OnnxModel model;
  model.input("x", {2, 4, 16, 16}).output("y");
  model.weights("w", {8, 2, 3, 3}, iota(8 * 2 * 9));
  auto& conv = model.node("Conv", {"x", "w"}, {"y"});
  set_int(conv, "group", 2);
  set_ints(conv, "strides", {2, 1});
  set_ints(conv, "dilations", {2, 2});
  set_ints(conv, "pads", {2, 1, 2, 0});
  const Graph g = import(model);
  const Op& op = g.ops[0];
  EXPECT_EQ(op.groups, 2);
  EXPECT_EQ(op.window, (Window{3, 3, 2, 1, 2, 1, 2, 0, 2, 2, false}));
  // H: (16 + 4 - 5) / 2 + 1 = 8; W: (16 + 1 - 5) / 1 + 1 = 13.
  EXPECT_EQ(g.output_of(op).shape, (Shape{2, 8, 8, 13}));
}

TEST_F(OnnxImport, SamePaddingPutsTheOddElementWhereAutoPadSays) {
  // Kernel 2, stride 1 on 6x6: one element of padding per axis, at the end (UPPER) or start.
  for (const auto& [mode, before] : {std::pair{"SAME_UPPER", 0}, std::pair{"SAME_LOWER", 1}}) {
    OnnxModel model;
    model.input("x", {1, 1, 6, 6}).output("y");
    model.weights("w", {1, 1, 2, 2}, {1, 1, 1, 1});
    set_string(model.node("Conv", {"x", "w"}, {"y"}), "auto_pad", mode);
    const Graph g = import(model);
    const Window& win = g.ops[0].window;
    EXPECT_EQ(win.pad_top, before) << mode;
    EXPECT_EQ(win.pad_left, before) << mode;
    EXPECT_EQ(win.pad_bottom, 1 - before) << mode;
    EXPECT_EQ(win.pad_right, 1 - before) << mode;
    EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 1, 6, 6})) << mode;
  }
  // Stride 2, kernel 3 on 7x7: output ceil(7/2) = 4 needs (4-1)*2 + 3 - 7 = 2, split evenly.
  OnnxModel strided;
  strided.input("x", {1, 1, 7, 7}).output("y");
  strided.weights("w", {1, 1, 3, 3}, iota(9));
  auto& conv = strided.node("Conv", {"x", "w"}, {"y"});
  set_string(conv, "auto_pad", "SAME_UPPER");
  set_ints(conv, "strides", {2, 2});
  const Graph g = import(strided);
  EXPECT_EQ(g.ops[0].window, Window::square(3, 2, 1));
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 1, 4, 4}));
}

TEST_F(OnnxImport, ValidPaddingPadsNothing) {
  OnnxModel model;
  model.input("x", {1, 1, 7, 7}).output("y");
  model.weights("w", {1, 1, 3, 3}, iota(9));
  set_string(model.node("Conv", {"x", "w"}, {"y"}), "auto_pad", "VALID");
  const Graph g = import(model);
  EXPECT_EQ(g.ops[0].window, Window::square(3));
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 1, 5, 5}));
}

TEST_F(OnnxImport, CeilModePoolingRoundsUp) {
  OnnxModel model;
  model.input("x", {1, 2, 6, 6}).output("max").output("avg");
  auto& max = model.node("MaxPool", {"x"}, {"max"}, "max");
  set_ints(max, "kernel_shape", {3, 3});
  set_ints(max, "strides", {2, 2});
  set_int(max, "ceil_mode", 1);
  auto& avg = model.node("AveragePool", {"x"}, {"avg"}, "avg");
  set_ints(avg, "kernel_shape", {3, 3});
  set_ints(avg, "strides", {2, 2});
  set_ints(avg, "pads", {1, 1, 1, 1});
  set_int(avg, "count_include_pad", 1);
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 2u);
  EXPECT_EQ(g.ops[0].kind, OpKind::MaxPool);
  EXPECT_TRUE(g.ops[0].window.ceil_mode);
  // floor((6 - 3) / 2) + 1 = 2 without ceil_mode; 3 with it.
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 2, 3, 3}));
  EXPECT_EQ(g.ops[1].kind, OpKind::AvgPool);
  EXPECT_TRUE(g.ops[1].count_include_pad);
  EXPECT_FALSE(g.ops[1].window.ceil_mode);
  EXPECT_EQ(g.output_of(g.ops[1]).shape, (Shape{1, 2, 3, 3}));
}

TEST_F(OnnxImport, OneByOneAveragePoolFromAdaptivePoolingIsDropped) {
  OnnxModel model;
  model.input("x", {1, 3, 6, 6}).output("y");
  auto& pool = model.node("AveragePool", {"x"}, {"p"}, "avgpool");
  set_ints(pool, "kernel_shape", {1, 1});
  set_ints(pool, "strides", {1, 1});
  model.node("Relu", {"p"}, {"y"});
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 1u);
  EXPECT_EQ(g.ops[0].kind, OpKind::Activation);
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 3, 6, 6}));
}

// Conv -> Clip: the three ways opsets spell ReLU6 all become one fused Clip 0..6.
TEST_F(OnnxImport, ClipBoundsFromAttributesInitializersOrConstants) {
  const auto conv_clip = [](int opset) {
    OnnxModel model(opset);
    model.input("x", {1, 1, 4, 4}).output("y");
    model.weights("w", {2, 1, 1, 1}, {1, -1});
    model.node("Conv", {"x", "w"}, {"c"}, "conv");
    return model;
  };
  OnnxModel attrs = conv_clip(9);
  auto& clip9 = attrs.node("Clip", {"c"}, {"y"}, "relu6");
  set_float(clip9, "min", 0.0f);
  set_float(clip9, "max", 6.0f);

  OnnxModel inits = conv_clip(11);
  inits.weights("lo", {}, {0.0f}).weights("hi", {}, {6.0f});
  inits.node("Clip", {"c", "lo", "hi"}, {"y"}, "relu6");

  OnnxModel constants = conv_clip(13);
  constant_scalar(constants, "lo", 0.0f);
  constant_scalar(constants, "hi", 6.0f);
  constants.node("Clip", {"c", "lo", "hi"}, {"y"}, "relu6");

  for (OnnxModel* model : {&attrs, &inits, &constants}) {
    const Graph g = import(*model);
    ASSERT_EQ(g.ops.size(), 1u);
    EXPECT_EQ(g.ops[0].kind, OpKind::Conv);
    EXPECT_EQ(g.ops[0].activation, Activation::relu6());
  }
}

TEST_F(OnnxImport, ClipWithOnlyAnUpperBound) {
  OnnxModel model(13);
  model.input("x", {1, 1, 4, 4}).output("y");
  model.weights("hi", {1}, {6.0f});
  model.node("Clip", {"x", "", "hi"}, {"y"});
  const Graph g = import(model);
  EXPECT_EQ(g.ops[0].activation.kind, ActKind::Clip);
  EXPECT_EQ(g.ops[0].activation.lo, std::numeric_limits<float>::lowest());
  EXPECT_EQ(g.ops[0].activation.hi, 6.0f);
}

TEST_F(OnnxImport, ActivationAttributesArePreserved) {
  OnnxModel model;
  model.input("x", {1, 2, 4, 4}).output("y");
  auto& hard = model.node("HardSigmoid", {"x"}, {"a"});
  set_float(hard, "alpha", 1.0f / 6.0f);
  set_float(model.node("LeakyRelu", {"a"}, {"b"}), "alpha", 0.2f);
  model.node("HardSwish", {"b"}, {"c"});
  model.node("Sigmoid", {"c"}, {"d"});
  model.node("Tanh", {"d"}, {"y"});
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 5u);
  EXPECT_EQ(g.ops[0].activation, (Activation{ActKind::HardSigmoid, 1.0f / 6.0f, 0.5f}));
  EXPECT_EQ(g.ops[1].activation, (Activation{ActKind::LeakyRelu, 0.2f, 0.0f}));
  EXPECT_EQ(g.ops[2].activation.kind, ActKind::HardSwish);
  EXPECT_EQ(g.ops[3].activation.kind, ActKind::Sigmoid);
  EXPECT_EQ(g.ops[4].activation.kind, ActKind::Tanh);
}

// torch exports SiLU as x * sigmoid(x) and (before opset 14) hardswish as x * hardsigmoid(x) with
// alpha 1/6: each is one activation on x, which the graph then fuses into x's convolution. A gate
// that multiplies another tensor (squeeze-and-excitation) or a hard sigmoid of other slope stays.
TEST_F(OnnxImport, TimesItsOwnGateIsOneActivation) {
  OnnxModel model;
  model.input("x", {1, 2, 4, 4}).output("silu").output("hswish").output("scaled").output("other");
  model.weights("w", {2, 2, 1, 1}, iota(4, 0.5f, 0.1f));
  model.node("Conv", {"x", "w"}, {"c"}, "conv");
  model.node("Sigmoid", {"c"}, {"s"}, "sigmoid");
  model.node("Mul", {"c", "s"}, {"silu"}, "silu_mul");
  model.node("Conv", {"x", "w"}, {"d"}, "conv2");
  set_float(model.node("HardSigmoid", {"d"}, {"h"}, "hard"), "alpha", 1.0f / 6.0f);
  model.node("Mul", {"h", "d"}, {"hswish"}, "hswish_mul");
  model.node("Sigmoid", {"x"}, {"gate"}, "gate");
  model.node("Mul", {"d", "gate"}, {"scaled"}, "se");
  auto& steep = model.node("HardSigmoid", {"x"}, {"steep"}, "steep");
  set_float(steep, "alpha", 0.2f);
  model.node("Mul", {"x", "steep"}, {"other"}, "other_mul");
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 7u);
  EXPECT_EQ(g.ops[0].kind, OpKind::Conv);
  EXPECT_EQ(g.ops[0].activation.kind, ActKind::Swish);
  EXPECT_EQ(g.tensor(g.ops[0].output).name, "silu");
  EXPECT_EQ(g.ops[1].kind, OpKind::Conv);  // d feeds the hardswish and the SE Mul: not fused
  EXPECT_EQ(g.ops[2].activation.kind, ActKind::HardSwish);
  EXPECT_EQ(g.ops[3].activation.kind, ActKind::Sigmoid);
  EXPECT_EQ(g.ops[4].kind, OpKind::Mul);
  EXPECT_EQ(g.ops[5].kind, OpKind::Activation);  // HardSigmoid 0.2, then the Mul
  EXPECT_EQ(g.ops[5].activation, (Activation{ActKind::HardSigmoid, 0.2f, 0.5f}));
  EXPECT_EQ(g.ops[6].kind, OpKind::Mul);
}

// gamma / sqrt(var + eps) scales the conv; (bias - mean) * scale + beta becomes its bias.
TEST_F(OnnxImport, BatchNormFoldsIntoTheConvolution) {
  OnnxModel model;
  model.input("x", {1, 1, 3, 3}).output("y");
  model.weights("w", {2, 1, 1, 1}, {2.0f, -1.0f});
  model.weights("b", {2}, {0.5f, 1.0f});
  model.weights("gamma", {2}, {1.5f, 0.5f});
  model.weights("beta", {2}, {0.25f, -0.75f});
  model.weights("mean", {2}, {0.1f, -0.2f});
  model.weights("var", {2}, {4.0f, 0.25f});
  model.node("Conv", {"x", "w", "b"}, {"c"}, "conv");
  set_float(model.node("BatchNormalization", {"c", "gamma", "beta", "mean", "var"}, {"y"}, "bn"), "epsilon", 1e-3f);
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 1u);
  const Op& conv = g.ops[0];
  EXPECT_TRUE(conv.folded_batchnorm);
  const double scale0 = 1.5 / std::sqrt(4.0 + 1e-3), scale1 = 0.5 / std::sqrt(0.25 + 1e-3);
  EXPECT_NEAR((*conv.weight)[0], 2.0 * scale0, 1e-6);
  EXPECT_NEAR((*conv.weight)[1], -1.0 * scale1, 1e-6);
  EXPECT_NEAR((*conv.bias)[0], (0.5 - 0.1) * scale0 + 0.25, 1e-6);
  EXPECT_NEAR((*conv.bias)[1], (1.0 + 0.2) * scale1 - 0.75, 1e-6);
  // The source counted a conv bias and BN's gamma and beta.
  EXPECT_EQ(source_params(g, conv), 2 + 2 + 2 * 2);
}

TEST_F(OnnxImport, BatchNormWithoutConvStaysAsScaleAndShift) {
  OnnxModel model;
  model.input("x", {1, 2, 3, 3}).output("y");
  model.weights("gamma", {2}, {2.0f, 1.0f}).weights("beta", {2}, {1.0f, 0.0f});
  model.weights("mean", {2}, {0.0f, 1.0f}).weights("var", {2}, {1.0f, 1.0f});
  model.node("Relu", {"x"}, {"r"});
  model.node("BatchNormalization", {"r", "gamma", "beta", "mean", "var"}, {"y"}, "bn");
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 2u);
  const Op& bn = g.ops[1];
  EXPECT_EQ(bn.kind, OpKind::BatchNorm);
  EXPECT_NEAR((*bn.weight)[0], 2.0 / std::sqrt(1.0 + 1e-5), 1e-6);
  EXPECT_NEAR((*bn.bias)[1], -1.0 / std::sqrt(1.0 + 1e-5), 1e-6);
}

// x: 1x2x2x2 (8 features) -> Flatten -> fully connected to 3 outputs.
OnnxModel fc_model(int64_t trans_b) {
  OnnxModel model;
  model.input("x", {1, 2, 2, 2}).output("y");
  model.node("Flatten", {"x"}, {"f"});
  // Out-major [3, 8] when transB = 1, in-major [8, 3] otherwise; both hold W[o][i] = 10 o + i.
  std::vector<float> w(24);
  for (int o = 0; o < 3; ++o) {
    for (int i = 0; i < 8; ++i) w[static_cast<size_t>(trans_b ? o * 8 + i : i * 3 + o)] = static_cast<float>(10 * o + i);
  }
  model.weights("w", trans_b ? std::vector<int64_t>{3, 8} : std::vector<int64_t>{8, 3}, w);
  model.weights("b", {3}, {1, 2, 3});
  set_int(model.node("Gemm", {"f", "w", "b"}, {"y"}, "fc"), "transB", trans_b);
  return model;
}

std::vector<float> out_major_fc_weight() {
  std::vector<float> w(24);
  for (size_t o = 0; o < 3; ++o) {
    for (size_t i = 0; i < 8; ++i) w[o * 8 + i] = static_cast<float>(10 * o + i);
  }
  return w;
}

TEST_F(OnnxImport, GemmStoresWeightsOutputMajorWhateverTransB) {
  for (int64_t trans_b : {0, 1}) {
    const Graph g = import(fc_model(trans_b));
    ASSERT_EQ(g.ops.size(), 1u) << "the Flatten feeding a Gemm is implicit";
    const Op& fc = g.ops[0];
    EXPECT_EQ(fc.kind, OpKind::Gemm);
    EXPECT_EQ(fc.out_channels, 3);
    EXPECT_EQ(*fc.weight, out_major_fc_weight()) << "transB=" << trans_b;
    EXPECT_EQ(*fc.bias, (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(g.output_of(fc).shape, (Shape{1, 3, 1, 1}));
  }
}

TEST_F(OnnxImport, MatMulBecomesGemmAndTakesAConstantAddAsBias) {
  OnnxModel model;
  model.input("x", {1, 2, 2, 2}).output("y").output("z");
  model.node("Flatten", {"x"}, {"f"});
  std::vector<float> w(24);
  for (int o = 0; o < 3; ++o) {
    for (int i = 0; i < 8; ++i) w[static_cast<size_t>(i * 3 + o)] = static_cast<float>(10 * o + i);
  }
  model.weights("w", {8, 3}, w).weights("b", {3}, {1, 2, 3});
  model.node("MatMul", {"f", "w"}, {"m"}, "linear");
  model.node("Add", {"m", "b"}, {"y"}, "linear_bias");
  model.node("MatMul", {"f", "w"}, {"z"}, "plain");
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 2u);
  EXPECT_EQ(g.ops[0].kind, OpKind::Gemm);
  EXPECT_EQ(g.ops[0].name, "linear");
  EXPECT_EQ(*g.ops[0].weight, out_major_fc_weight());
  ASSERT_TRUE(g.ops[0].has_bias);
  EXPECT_EQ(*g.ops[0].bias, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(g.output_of(g.ops[0]).name, "y");
  EXPECT_FALSE(g.ops[1].has_bias);
  EXPECT_EQ(g.ops[1].bias, nullptr);
}

TEST_F(OnnxImport, ReshapeToBatchByFeaturesIsAFlatten) {
  for (const std::vector<int64_t>& target :
       {std::vector<int64_t>{1, -1}, std::vector<int64_t>{1, 32}, std::vector<int64_t>{0, -1},
        std::vector<int64_t>{-1, 32}}) {
    OnnxModel model;
    model.input("x", {1, 2, 4, 4}).output("y");
    model.int64s("shape", target);
    model.node("Reshape", {"x", "shape"}, {"r"});
    model.node("Softmax", {"r"}, {"y"});
    const Graph g = import(model);
    ASSERT_EQ(g.ops.size(), 2u);
    EXPECT_EQ(g.ops[0].kind, OpKind::Flatten);
    EXPECT_EQ(g.ops[1].kind, OpKind::Softmax);
    EXPECT_EQ(g.output_of(g.ops[1]).shape, (Shape{1, 32, 1, 1}));
  }
}

// torch writes F.pad, and AveragePool(count_include_pad=True) with padding (inception_v3, and with
// zero pads densenet's transitions), as a Pad node before the window op: it becomes the op's padding.
TEST_F(OnnxImport, ZeroPadBecomesThePaddingOfTheConvOrAveragePoolReadingIt) {
  OnnxModel model;
  model.input("x", {1, 2, 6, 6}).output("conv").output("avg").output("dense");
  model.int64s("pads", {0, 0, 1, 2, 0, 0, 3, 0});
  model.int64s("none", {0, 0, 0, 0, 0, 0, 0, 0});
  model.node("Pad", {"x", "pads"}, {"padded"}, "pad");
  model.node("Pad", {"x", "none"}, {"unpadded"}, "pad0");
  model.weights("w", {4, 2, 3, 3}, iota(4 * 2 * 3 * 3, -1.0f, 0.02f));
  auto& conv = model.node("Conv", {"padded", "w"}, {"conv"}, "conv");
  set_ints(conv, "pads", {1, 1, 1, 1});
  auto& avg = model.node("AveragePool", {"padded"}, {"avg"}, "avg");
  set_ints(avg, "kernel_shape", {3, 3});
  auto& dense = model.node("AveragePool", {"unpadded"}, {"dense"}, "dense");
  set_ints(dense, "kernel_shape", {2, 2});
  set_ints(dense, "strides", {2, 2});
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 3u);
  EXPECT_EQ(g.ops[0].inputs[0], g.inputs[0]);  // no op for the Pad
  EXPECT_EQ(g.ops[0].window.pad_top, 2);
  EXPECT_EQ(g.ops[0].window.pad_left, 3);
  EXPECT_EQ(g.ops[0].window.pad_bottom, 4);
  EXPECT_EQ(g.ops[0].window.pad_right, 1);
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 4, 10, 8}));
  EXPECT_EQ(g.ops[1].kind, OpKind::AvgPool);
  EXPECT_TRUE(g.ops[1].count_include_pad);  // the explicit zeros are averaged
  EXPECT_EQ(g.ops[1].window.pad_top, 1);
  EXPECT_EQ(g.ops[1].window.pad_left, 2);
  EXPECT_EQ(g.ops[1].window.pad_bottom, 3);
  EXPECT_EQ(g.ops[1].window.pad_right, 0);
  EXPECT_EQ(g.output_of(g.ops[1]).shape, (Shape{1, 2, 8, 6}));
  EXPECT_FALSE(g.ops[2].count_include_pad);
  EXPECT_EQ(g.output_of(g.ops[2]).shape, (Shape{1, 2, 3, 3}));
}

TEST_F(OnnxImport, PadBeforeOpset11TakesItsPadsFromAnAttribute) {
  OnnxModel model(9);
  model.input("x", {1, 1, 4, 4}).output("y");
  auto& pad = model.node("Pad", {"x"}, {"padded"}, "pad");
  set_ints(pad, "pads", {0, 0, 1, 1, 0, 0, 1, 1});
  model.weights("w", {1, 1, 3, 3}, iota(9));
  model.node("Conv", {"padded", "w"}, {"y"}, "conv");
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 1u);
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 1, 4, 4}));
}

TEST_F(OnnxImport, PadThatIsNotAWindowsZeroPaddingIsRejected) {
  const auto model_with = [](const std::function<void(OnnxModel&)>& edit, const std::string& reader = "Conv") {
    OnnxModel model;
    model.input("x", {1, 1, 4, 4}).output("y");
    model.int64s("pads", {0, 0, 1, 1, 0, 0, 1, 1});
    edit(model);
    if (reader == "Conv") {
      model.weights("w", {1, 1, 3, 3}, iota(9));
      model.node("Conv", {"padded", "w"}, {"y"}, "conv");
    } else {
      auto& pool = model.node(reader, {"padded"}, {"y"}, "reader");
      set_ints(pool, "kernel_shape", {3, 3});
    }
    return model;
  };
  expect_error(model_with([](OnnxModel& m) { m.node("Pad", {"x", "pads"}, {"padded"}, "pad"); }, "MaxPool"),
               {"node \"pad\" (Pad)", "read by \"reader\" (MaxPool)", "only where Conv or AveragePool"});
  expect_error(model_with([](OnnxModel& m) { set_string(m.node("Pad", {"x", "pads"}, {"padded"}, "pad"), "mode", "reflect"); }),
               {"node \"pad\" (Pad)", "mode \"reflect\""});
  expect_error(model_with([](OnnxModel& m) {
                 m.weights("value", {}, {1.5f});
                 m.node("Pad", {"x", "pads", "value"}, {"padded"}, "pad");
               }),
               {"node \"pad\" (Pad)", "pads with 1.5; only zero padding"});
  expect_error(model_with([](OnnxModel& m) {
                 m.int64s("channels", {0, 1, 0, 0, 0, 0, 0, 0});
                 m.node("Pad", {"x", "channels"}, {"padded"}, "pad");
               }),
               {"node \"pad\" (Pad)", "batch or channel axis"});
  expect_error(model_with([](OnnxModel& m) {
                 m.int64s("crop", {0, 0, -1, 0, 0, 0, 0, 0});
                 m.node("Pad", {"x", "crop"}, {"padded"}, "pad");
               }),
               {"node \"pad\" (Pad)", "negative pads crop"});
  OnnxModel output;
  output.input("x", {1, 1, 4, 4}).output("padded");
  output.int64s("pads", {0, 0, 1, 1, 0, 0, 1, 1});
  output.node("Pad", {"x", "pads"}, {"padded"}, "pad");
  expect_error(output, {"node \"pad\" (Pad)", "is a graph output"});
}

// An INT64 Constant node, as torch writes the scalars of its shape arithmetic.
void constant_ints(OnnxModel& model, const std::string& output, std::initializer_list<int64_t> dims,
                   std::initializer_list<int64_t> values) {
  auto& node = model.node("Constant", {}, {output});
  auto* attr = node.add_attribute();
  attr->set_name("value");
  attr->set_type(onnx::AttributeProto::TENSOR);
  attr->mutable_t()->set_data_type(onnx::TensorProto::INT64);
  for (int64_t d : dims) attr->mutable_t()->add_dims(d);
  for (int64_t v : values) attr->mutable_t()->add_int64_data(v);
}

// ShuffleNet v2 as torch exports it without constant folding: x.chunk(2, dim=1) as two Slices whose
// split point comes from Shape, Gather, Add, Div and Mul; the channel shuffle as Reshape, Transpose,
// Reshape, the 5-D target assembled from Constant scalars by Unsqueeze and Concat.
OnnxModel shufflenet_unit() {
  OnnxModel model;
  model.input("x", {1, 6, 4, 4}).output("y");
  model.node("Shape", {"x"}, {"shape"}, "shape");
  model.int64s("one", {1});
  model.int64s("zero", {0});
  model.int64s("two", {2});
  model.node("Gather", {"shape", "one"}, {"channels"}, "gather");
  model.node("Add", {"channels", "one"}, {"rounded"}, "add");
  model.node("Div", {"rounded", "two"}, {"half"}, "div");
  model.node("Mul", {"half", "one"}, {"split"}, "mul");
  model.node("Mul", {"half", "two"}, {"end"}, "mul2");
  model.node("Slice", {"x", "zero", "split", "one"}, {"kept"}, "slice");
  model.node("Slice", {"x", "split", "end", "one"}, {"branch_in"}, "slice1");
  model.weights("w", {3, 3, 1, 1}, iota(9, -0.4f, 0.1f));
  model.node("Conv", {"branch_in", "w"}, {"branch"}, "conv");
  set_int(model.node("Concat", {"kept", "branch"}, {"joined"}, "concat"), "axis", 1);
  const std::pair<const char*, int64_t> dims[] = {{"n", 1}, {"g", 2}, {"per", -1}, {"height", 4}, {"width", 4}};
  for (const auto& [name, value] : dims) {
    constant_ints(model, name, {}, {value});
    model.node("Unsqueeze", {name, "zero"}, {std::string(name) + "_1d"});
  }
  set_int(model.node("Concat", {"n_1d", "g_1d", "per_1d", "height_1d", "width_1d"}, {"target"}, "target"), "axis", 0);
  model.node("Reshape", {"joined", "target"}, {"grouped"}, "reshape");
  set_ints(model.node("Transpose", {"grouped"}, {"swapped"}, "transpose"), "perm", {0, 2, 1, 3, 4});
  model.int64s("back", {0, -1, 4, 4});  // defined after the Transpose, as torch writes it
  model.node("Reshape", {"swapped", "back"}, {"y"}, "reshape1");
  return model;
}

TEST_F(OnnxImport, ShuffleNetsSplitAndChannelShuffleBecomeSlicesAndAShuffle) {
  const Graph g = import(shufflenet_unit());
  ASSERT_EQ(g.ops.size(), 5u);
  EXPECT_EQ(g.ops[0].kind, OpKind::Slice);
  EXPECT_EQ(g.ops[0].channel_offset, 0);
  EXPECT_EQ(g.ops[0].out_channels, 3);  // (6 + 1) / 2
  EXPECT_EQ(g.ops[1].kind, OpKind::Slice);
  EXPECT_EQ(g.ops[1].channel_offset, 3);
  EXPECT_EQ(g.output_of(g.ops[1]).shape, (Shape{1, 3, 4, 4}));
  EXPECT_EQ(g.ops[2].kind, OpKind::Conv);
  EXPECT_EQ(g.ops[3].kind, OpKind::Concat);
  EXPECT_EQ(g.ops[4].kind, OpKind::ChannelShuffle);
  EXPECT_EQ(g.ops[4].name, "reshape1");  // the node that completes the pattern
  EXPECT_EQ(g.ops[4].groups, 2);
  EXPECT_EQ(g.tensor(g.outputs[0]).name, "y");
  EXPECT_EQ(g.tensor(g.outputs[0]).shape, (Shape{1, 6, 4, 4}));
}

TEST_F(OnnxImport, FiveDimensionalValuesOutsideAChannelShuffleAreRejected) {
  const auto unit_with = [](const std::function<void(onnx::GraphProto&)>& edit) {
    OnnxModel model = shufflenet_unit();
    edit(*model.graph());
    return model;
  };
  const auto node_named = [](onnx::GraphProto& graph, const std::string& name) -> onnx::NodeProto& {
    for (auto& node : *graph.mutable_node()) {
      if (node.name() == name) return node;
    }
    throw std::runtime_error("no node " + name);
  };
  expect_error(unit_with([&](onnx::GraphProto& g) { node_named(g, "transpose").mutable_attribute(0)->set_ints(1, 1); }),
               {"node \"transpose\" (Transpose)", "perm [0, 1, 1, 3, 4] is not a channel shuffle's"});
  expect_error(unit_with([&](onnx::GraphProto& g) { node_named(g, "reshape1").set_input(1, "target"); }),
               {"node \"reshape1\" (Reshape)", "not back to 1x6x4x4"});
  expect_error(unit_with([&](onnx::GraphProto& g) { node_named(g, "transpose").set_input(0, "joined"); }),
               {"node \"reshape\" (Reshape)", "not read by one Transpose alone"});
  // A file exported at 4x4 names 4x4 in its shuffle; it cannot run at another size.
  ModelOptions larger;
  larger.resolution = Resolution{8, 8};
  expect_error(shufflenet_unit(), {"node \"reshape\" (Reshape)", "fixes batch, height and width at export"}, larger);
  OnnxModel alone;
  alone.input("x", {1, 2, 4, 4}).output("y");
  set_ints(alone.node("Transpose", {"x"}, {"y"}, "nhwc"), "perm", {0, 2, 3, 1});
  expect_error(alone, {"node \"nhwc\" (Transpose)", "only inside a channel shuffle"});
}

// Before opset 10 Slice takes its bounds from attributes, and before opset 13 Unsqueeze its axes;
// opset 15's Shape can return a range of the dimensions.
TEST_F(OnnxImport, SliceUnsqueezeAndShapeFollowTheirOpsetsConventions) {
  OnnxModel old(9);
  old.input("x", {1, 6, 4, 4}).output("y");
  auto& cut = old.node("Slice", {"x"}, {"y"}, "cut");
  set_ints(cut, "starts", {2});
  set_ints(cut, "ends", {5});
  set_ints(cut, "axes", {1});
  const Graph sliced = import(old);
  ASSERT_EQ(sliced.ops.size(), 1u);
  EXPECT_EQ(sliced.ops[0].channel_offset, 2);
  EXPECT_EQ(sliced.output_of(sliced.ops[0]).shape, (Shape{1, 3, 4, 4}));

  OnnxModel eleven(11);
  eleven.input("x", {1, 6, 4, 4}).output("y");
  constant_ints(eleven, "three", {}, {3});
  set_ints(eleven.node("Unsqueeze", {"three"}, {"end"}, "unsqueeze"), "axes", {0});
  eleven.int64s("zero", {0}).int64s("one", {1});
  eleven.node("Slice", {"x", "zero", "end", "one"}, {"y"}, "cut");
  EXPECT_EQ(import(eleven).ops[0].out_channels, 3);

  OnnxModel fifteen(15);
  fifteen.input("x", {1, 6, 4, 4}).output("y");
  auto& dims = fifteen.node("Shape", {"x"}, {"hw"}, "shape");
  set_int(dims, "start", 1);
  set_int(dims, "end", -2);  // [C]: 6
  fifteen.int64s("two", {2});
  fifteen.node("Div", {"hw", "two"}, {"quotient"}, "div");
  // A dynamic-axes export casts its shape arithmetic to INT64, which it already is.
  set_int(fifteen.node("Cast", {"quotient"}, {"half"}, "cast"), "to", onnx::TensorProto::INT64);
  fifteen.int64s("zero", {0}).int64s("one", {1});
  fifteen.node("Slice", {"x", "zero", "half", "one"}, {"y"}, "cut");
  EXPECT_EQ(import(fifteen).ops[0].out_channels, 3);

  OnnxModel to_float;
  to_float.input("x", {1, 6, 4, 4}).output("y");
  to_float.int64s("two", {2});
  set_int(to_float.node("Cast", {"two"}, {"real"}, "cast"), "to", onnx::TensorProto::FLOAT);
  to_float.node("Relu", {"x"}, {"y"});
  expect_error(to_float, {"node \"cast\" (Cast)", "casts \"two\" to FLOAT"});
}

TEST_F(OnnxImport, SlicesOtherThanOfChannelsAndShapeArithmeticOnActivationsAreRejected) {
  const auto slice_of = [](std::vector<int64_t> starts, std::vector<int64_t> ends, std::vector<int64_t> axes,
                           std::vector<int64_t> steps) {
    OnnxModel model;
    model.input("x", {1, 4, 6, 6}).output("y");
    model.int64s("starts", starts).int64s("ends", ends).int64s("axes", axes).int64s("steps", steps);
    model.node("Slice", {"x", "starts", "ends", "axes", "steps"}, {"y"}, "cut");
    return model;
  };
  EXPECT_EQ(import(slice_of({-3}, {INT64_MAX}, {1}, {1})).ops[0].channel_offset, 1);  // ONNX clamps
  expect_error(slice_of({1}, {3}, {2}, {1}), {"node \"cut\" (Slice)", "slices axis 2", "only slices of channels"});
  EXPECT_EQ(import(slice_of({0, 0}, {2, 6}, {1, -1}, {1, 1})).ops[0].out_channels, 2);  // all of W: no cut
  expect_error(slice_of({0}, {4}, {1}, {2}), {"node \"cut\" (Slice)", "step 2"});
  expect_error(slice_of({3}, {1}, {1}, {1}), {"node \"cut\" (Slice)", "takes no channels"});
  OnnxModel division;
  division.input("x", {1, 4, 6, 6}).output("y");
  division.int64s("four", {4}).int64s("zero", {0});
  division.node("Div", {"four", "zero"}, {"nothing"}, "div");
  division.node("Relu", {"x"}, {"y"});
  expect_error(division, {"node \"div\" (Div)", "4 / 0 is undefined"});
  OnnxModel divide_activations;
  divide_activations.input("x", {1, 4, 6, 6}).output("y");
  divide_activations.node("Div", {"x", "x"}, {"y"}, "ratio");
  expect_error(divide_activations, {"node \"ratio\" (Div)", "operand \"x\" is not a constant integer"});
  OnnxModel gather;
  gather.input("x", {1, 4, 6, 6}).output("y");
  gather.int64s("index", {1});
  gather.node("Gather", {"x", "index"}, {"y"}, "pick");
  expect_error(gather, {"node \"pick\" (Gather)", "only on constant integers"});
}

// torch's x.mean([2, 3]) (mnasnet's head) is a global average pool.
TEST_F(OnnxImport, SpatialReduceMeanIsAGlobalAveragePool) {
  OnnxModel model;
  model.input("x", {1, 4, 5, 3}).output("y").output("kept");
  auto& mean = model.node("ReduceMean", {"x"}, {"m"}, "mean");
  set_ints(mean, "axes", {-1, 2});
  set_int(mean, "keepdims", 0);
  model.weights("w", {6, 4}, iota(24));
  auto& gemm = model.node("Gemm", {"m", "w"}, {"y"}, "fc");
  set_int(gemm, "transB", 1);
  auto& kept = model.node("ReduceMean", {"x"}, {"kept"}, "kept");
  set_ints(kept, "axes", {2, 3});
  const Graph g = import(model);
  ASSERT_EQ(g.ops.size(), 3u);
  EXPECT_EQ(g.ops[0].kind, OpKind::GlobalAvgPool);
  EXPECT_EQ(g.output_of(g.ops[1]).shape, (Shape{1, 6, 1, 1}));
  EXPECT_EQ(g.ops[2].kind, OpKind::GlobalAvgPool);
  EXPECT_EQ(g.output_of(g.ops[2]).shape, (Shape{1, 4, 1, 1}));
}

TEST_F(OnnxImport, ReduceMeanOverOtherAxesIsRejected) {
  OnnxModel model;
  model.input("x", {1, 4, 5, 3}).output("y");
  auto& mean = model.node("ReduceMean", {"x"}, {"y"}, "mean");
  set_ints(mean, "axes", {1});
  expect_error(model, {"node \"mean\" (ReduceMean)", "reduces axes [1]", "height and width"});
}

TEST_F(OnnxImport, ConcatResidualsDropoutAndIdentity) {
  OnnxModel model(12);
  model.input("x", {1, 2, 4, 4}).output("y");
  model.weights("w", {2, 2, 1, 1}, {1, 0, 0, 1});
  // torch deduplicates equal initializers through Identity nodes.
  model.node("Identity", {"w"}, {"w2"});
  model.node("Conv", {"x", "w"}, {"a"}, "a");
  model.node("Conv", {"x", "w2"}, {"b"}, "b");
  model.node("Dropout", {"a"}, {"d", "mask"});
  model.node("Sub", {"d", "b"}, {"s"});
  model.node("Mul", {"s", "x"}, {"m"});
  set_int(model.node("Concat", {"m", "b", "x"}, {"c"}, "cat"), "axis", -3);
  model.node("GlobalAveragePool", {"c"}, {"y"});
  const Graph g = import(model);
  std::vector<OpKind> kinds;
  for (const Op& op : g.ops) kinds.push_back(op.kind);
  EXPECT_EQ(kinds, (std::vector<OpKind>{OpKind::Conv, OpKind::Conv, OpKind::Sub, OpKind::Mul, OpKind::Concat,
                                        OpKind::GlobalAvgPool}));
  EXPECT_EQ(g.ops[1].weight, g.ops[0].weight);
  EXPECT_EQ(g.output_of(g.ops[4]).shape, (Shape{1, 6, 4, 4}));
  EXPECT_EQ(g.output_of(g.ops[5]).shape, (Shape{1, 6, 1, 1}));
}

TEST_F(OnnxImport, EmptyNodeNamesFallBackToTypeAndIndex) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  model.node("Relu", {"x"}, {"r"});
  model.node("Sigmoid", {"r"}, {"y"});
  const Graph g = import(model);
  EXPECT_EQ(g.ops[0].name, "Relu_0");
  EXPECT_EQ(g.ops[1].name, "Sigmoid_1");
}

TEST_F(OnnxImport, SymbolicDimensionsComeFromTheOptions) {
  OnnxModel model;
  model.input("x", {kSymbolic, 3, kSymbolic, kSymbolic}).output("y");
  model.node("Relu", {"x"}, {"y"});
  const fs::path path = model.save(file("dynamic.onnx"));
  expect_error(path, {"input \"x\"", "--resolution"});

  ModelOptions options;
  options.resolution = Resolution{32, 48};
  options.batch = 4;
  const Graph g = import_onnx(path, options);
  EXPECT_EQ(g.tensor(g.inputs[0]).shape, (Shape{4, 3, 32, 48}));
}

TEST_F(OnnxImport, ResolutionOverridesAStaticInput) {
  ModelOptions options;
  options.resolution = Resolution{16, 12};
  const Graph g = import(small_conv_model(), options);
  EXPECT_EQ(g.tensor(g.inputs[0]).shape, (Shape{1, 3, 16, 12}));
  EXPECT_EQ(g.output_of(g.ops[0]).shape, (Shape{1, 4, 16, 12}));
}

// ---- errors ----

TEST_F(OnnxImport, MissingFileCannotBeOpened) { expect_error(file("absent.onnx"), {"cannot open"}); }

TEST_F(OnnxImport, RandomBytesAreNotAModel) {
  std::mt19937 engine(7);
  std::string bytes(4096, '\0');
  for (char& c : bytes) c = static_cast<char>(engine() & 0xff);
  std::ofstream(file("random.onnx"), std::ios::binary) << bytes;
  expect_error(file("random.onnx"), {"not a valid ONNX model"});
}

TEST_F(OnnxImport, EmptyFileIsNotAModel) {
  std::ofstream(file("empty.onnx"), std::ios::binary).flush();
  expect_error(file("empty.onnx"), {"not a valid ONNX model"});
}

TEST_F(OnnxImport, TruncatedFileIsNotAModel) {
  std::string bytes;
  ASSERT_TRUE(small_conv_model().proto().SerializeToString(&bytes));
  for (size_t keep : {bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(file("truncated.onnx"), std::ios::binary) << bytes.substr(0, keep);
    expect_error(file("truncated.onnx"), {"not a valid ONNX model"});
  }
}

TEST_F(OnnxImport, UnsupportedOperatorIsNamedWithTheSupportedList) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  model.node("Relu", {"x"}, {"r"});
  model.node("LRN", {"r"}, {"y"}, "norm1");
  expect_error(model, {"node \"norm1\" (LRN)", "unsupported operator \"LRN\"", "Conv", "BatchNormalization", "MaxPool"});
}

TEST_F(OnnxImport, OperatorFromAnotherDomainIsUnsupported) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  model.node("Relu", {"x"}, {"y"}, "fused").set_domain("com.microsoft");
  expect_error(model, {"node \"fused\"", "domain \"com.microsoft\""});
}

TEST_F(OnnxImport, OpsetOutsideNineToSeventeenIsNamed) {
  for (int opset : {8, 18}) {
    OnnxModel model(opset);
    model.input("x", {1, 1, 4, 4}).output("y");
    model.node("Relu", {"x"}, {"y"});
    expect_error(model, {fmt::format("opset {}", opset), "9 to 17"});
  }
  OnnxModel none;
  none.proto().clear_opset_import();
  none.input("x", {1, 1, 4, 4}).output("y");
  none.node("Relu", {"x"}, {"y"});
  expect_error(none, {"no default-domain ONNX opset"});
}

TEST_F(OnnxImport, AddOfMismatchedShapesNamesTheNode) {
  OnnxModel model;
  model.input("a", {1, 8, 4, 4}).input("b", {1, 8, 5, 5}).output("y");
  model.node("Add", {"a", "b"}, {"y"});
  expect_error(model, {"node \"Add_0\"", "1x8x4x4", "1x8x5x5"});
}

TEST_F(OnnxImport, ConvWeightOfTheWrongSizeNamesTheNode) {
  OnnxModel model;
  model.input("x", {1, 4, 8, 8}).output("y");
  model.weights("w", {8, 3, 3, 3}, iota(8 * 3 * 9));
  model.node("Conv", {"x", "w"}, {"y"}, "conv1");
  expect_error(model, {"node \"conv1\" (Conv)", "8x3x3x3", "expects 3 input channels", "has 4"});

  OnnxModel bias;
  bias.input("x", {1, 3, 8, 8}).output("y");
  bias.weights("w", {8, 3, 3, 3}, iota(8 * 3 * 9)).weights("b", {7}, iota(7));
  bias.node("Conv", {"x", "w", "b"}, {"y"}, "conv1");
  expect_error(bias, {"node \"conv1\" (Conv)", "bias \"b\" has 7 values, expected 8"});
}

TEST_F(OnnxImport, GemmWeightOfTheWrongSizeNamesTheNode) {
  OnnxModel model;
  model.input("x", {1, 2, 2, 2}).output("y");
  model.node("Flatten", {"x"}, {"f"});
  model.weights("w", {3, 9}, iota(27));
  set_int(model.node("Gemm", {"f", "w"}, {"y"}, "fc"), "transB", 1);
  expect_error(model, {"node \"fc\" (Gemm)", "expects 9 input features", "has 8"});
}

TEST_F(OnnxImport, UnsupportedGemmAttributesAreNamed) {
  OnnxModel trans_a = fc_model(1);
  set_int(*trans_a.graph()->mutable_node(1), "transA", 1);
  expect_error(trans_a, {"node \"fc\" (Gemm)", "transA"});
  OnnxModel alpha = fc_model(1);
  set_float(*alpha.graph()->mutable_node(1), "alpha", 0.5f);
  expect_error(alpha, {"node \"fc\" (Gemm)", "alpha=0.5"});
}

TEST_F(OnnxImport, KernelThatDoesNotFitNamesTheNode) {
  OnnxModel model;
  model.input("x", {1, 1, 2, 2}).output("y");
  set_ints(model.node("MaxPool", {"x"}, {"y"}, "pool"), "kernel_shape", {3, 3});
  expect_error(model, {"node \"pool\"", "does not fit input 2x2"});
}

TEST_F(OnnxImport, ConstantOperandOfAnElementwiseOpIsRejected) {
  OnnxModel model;
  model.input("x", {1, 2, 4, 4}).output("y");
  model.weights("k", {1, 2, 1, 1}, {1, 2});
  model.node("Mul", {"x", "k"}, {"y"}, "scale");
  expect_error(model, {"node \"scale\" (Mul)", "operand \"k\" is a constant", "two activations"});
}

TEST_F(OnnxImport, ReshapeOtherThanFlatteningIsRejected) {
  OnnxModel model;
  model.input("x", {1, 2, 4, 4}).output("y");
  model.int64s("shape", {1, 8, 4});
  model.node("Reshape", {"x", "shape"}, {"y"}, "view");
  expect_error(model, {"node \"view\" (Reshape)", "1x2x4x4 to [1, 8, 4]", "[N, -1] or [N, 32]"});
}

TEST_F(OnnxImport, UndefinedTensorIsNamed) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  model.node("Add", {"x", "ghost"}, {"y"}, "sum");
  expect_error(model, {"node \"sum\" (Add)", "\"ghost\" is not defined"});

  OnnxModel output;
  output.input("x", {1, 1, 4, 4}).output("nowhere");
  output.node("Relu", {"x"}, {"y"});
  expect_error(output, {"graph output \"nowhere\""});
}

TEST_F(OnnxImport, ShortRawDataIsRejected) {
  OnnxModel model = small_conv_model();
  onnx::TensorProto* weight = model.graph()->mutable_initializer(0);
  weight->mutable_raw_data()->resize(10);
  expect_error(model, {"node \"conv\" (Conv)", "\"w\"", "10 bytes of raw_data, expected 432"});
}

TEST_F(OnnxImport, MissingFloatDataIsRejected) {
  OnnxModel model;
  model.input("x", {1, 2, 4, 4}).output("y");
  model.weights("w", {3, 2, 1, 1}, {1, 2, 3}, false);
  model.node("Conv", {"x", "w"}, {"y"}, "conv");
  expect_error(model, {"node \"conv\"", "holds 3 values, expected 6"});
}

TEST_F(OnnxImport, NonFloatWeightsAreRejected) {
  OnnxModel model = small_conv_model();
  model.graph()->mutable_initializer(0)->set_data_type(onnx::TensorProto::DOUBLE);
  expect_error(model, {"node \"conv\" (Conv)", "DOUBLE", "FLOAT"});
}

TEST_F(OnnxImport, HugeDimensionsAreRejectedWithoutAllocating) {
  OnnxModel model = small_conv_model();
  onnx::TensorProto* weight = model.graph()->mutable_initializer(0);
  weight->set_dims(0, int64_t{1} << 40);
  expect_error(model, {"node \"conv\"", "invalid dimensions"});
}

TEST_F(OnnxImport, WeightComputedAtRunTimeIsRejected) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).input("w", {1, 1, 1, 1}).output("y");
  model.node("Conv", {"x", "w"}, {"y"}, "conv");
  expect_error(model, {"node \"conv\"", "\"w\" must be an initializer or a Constant"});
}

TEST_F(OnnxImport, TrainingModeBatchNormIsRejected) {
  OnnxModel model;
  model.input("x", {1, 1, 3, 3}).output("y");
  for (const char* name : {"g", "b", "m", "v"}) model.weights(name, {1}, {1.0f});
  model.node("BatchNormalization", {"x", "g", "b", "m", "v"}, {"y", "running_mean", "running_var"}, "bn");
  expect_error(model, {"node \"bn\"", "running_mean", "eval mode"});
}

TEST_F(OnnxImport, WrongAttributeTypeIsNamed) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  auto& pool = model.node("MaxPool", {"x"}, {"y"}, "pool");
  set_ints(pool, "kernel_shape", {2, 2});
  set_float(pool, "ceil_mode", 1.0f);
  expect_error(model, {"node \"pool\"", "\"ceil_mode\" has type FLOAT, expected INT"});
}

TEST_F(OnnxImport, OneDimensionalWindowsAreRejected) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  auto& pool = model.node("MaxPool", {"x"}, {"y"}, "pool");
  set_ints(pool, "kernel_shape", {2, 2});
  set_ints(pool, "strides", {2});
  expect_error(model, {"node \"pool\"", "strides has 1 values, expected 2"});
}

TEST_F(OnnxImport, BroadcastAcrossRanksIsRejected) {
  // ONNX aligns (N, C) with the trailing (H, W) of an image; the IR would align it with (N, C).
  OnnxModel model;
  model.input("x", {1, 4, 1, 1}).output("y");
  model.node("Flatten", {"x"}, {"f"});
  model.node("Add", {"x", "f"}, {"y"}, "mixed");
  expect_error(model, {"node \"mixed\" (Add)", "ranks 4 and 2"});
}

TEST_F(OnnxImport, MaxPoolIndicesAreRejected) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  set_ints(model.node("MaxPool", {"x"}, {"y", "indices"}, "pool"), "kernel_shape", {2, 2});
  expect_error(model, {"node \"pool\" (MaxPool)", "(\"indices\") is not supported"});
}

TEST_F(OnnxImport, SpatialSoftmaxIsRejected) {
  OnnxModel model;
  model.input("x", {1, 4, 2, 2}).output("y");
  set_int(model.node("Softmax", {"x"}, {"y"}, "probs"), "axis", 1);
  expect_error(model, {"node \"probs\" (Softmax)", "over channels", "1x4x2x2"});
}

TEST_F(OnnxImport, NonImageInputIsRejected) {
  OnnxModel model;
  model.input("tokens", {1, 128}).output("y");
  model.node("Relu", {"tokens"}, {"y"});
  expect_error(model, {"input \"tokens\"", "rank 2"});
}

TEST_F(OnnxImport, RedefinedValueIsRejected) {
  OnnxModel model;
  model.input("x", {1, 1, 4, 4}).output("y");
  model.node("Relu", {"x"}, {"y"});
  model.node("Sigmoid", {"x"}, {"y"}, "again");
  expect_error(model, {"node \"again\"", "\"y\" is already defined"});
}

// Flipped bytes anywhere in a model that uses most operators: every outcome must be a graph or an
// occam::Error, never a crash or another exception (run under the sanitizers to mean something).
TEST_F(OnnxImport, CorruptedBytesEndInAGraphOrAnError) {
  OnnxModel model(11);
  model.input("x", {1, 3, 8, 8}).output("y");
  model.weights("w", {4, 3, 3, 3}, iota(4 * 3 * 9, -0.5f, 0.01f));
  model.weights("gamma", {4}, {1, 1, 1, 1}).weights("beta", {4}, {0, 0, 0, 0});
  model.weights("mean", {4}, {0, 0, 0, 0}).weights("var", {4}, {1, 1, 1, 1});
  model.weights("lo", {}, {0.0f}).weights("hi", {}, {6.0f});
  model.weights("fc", {10, 8 * 4 * 4}, iota(10 * 8 * 16, 0.0f, 0.001f)).weights("fc_b", {10}, iota(10));
  model.int64s("flat", {1, -1});
  auto& conv = model.node("Conv", {"x", "w"}, {"c"}, "conv");
  set_ints(conv, "pads", {1, 1, 1, 1});
  model.node("BatchNormalization", {"c", "gamma", "beta", "mean", "var"}, {"b"}, "bn");
  model.node("Clip", {"b", "lo", "hi"}, {"r"}, "relu6");
  set_int(model.node("Concat", {"r", "b"}, {"cat"}, "cat"), "axis", 1);
  auto& pool = model.node("MaxPool", {"cat"}, {"p"}, "pool");
  set_ints(pool, "kernel_shape", {2, 2});
  set_ints(pool, "strides", {2, 2});
  model.node("Reshape", {"p", "flat"}, {"f"}, "flatten");
  set_int(model.node("Gemm", {"f", "fc", "fc_b"}, {"y"}, "fc"), "transB", 1);
  std::string bytes;
  ASSERT_TRUE(model.proto().SerializeToString(&bytes));
  ASSERT_NO_THROW(import_onnx(model.save(file("intact.onnx"))));

  std::mt19937 engine(2106);
  int imported = 0, rejected = 0;
  for (int round = 0; round < 400; ++round) {
    std::string corrupt = bytes;
    const int flips = 1 + static_cast<int>(engine() % 4);
    for (int f = 0; f < flips; ++f) {
      // The nodes are serialised first and the inputs and outputs last, with the weights between:
      // aim a third of the flips at each end.
      const size_t size = corrupt.size();
      const size_t region = engine() % 3;
      const size_t at = region == 0 ? engine() % 2048 : region == 1 ? size - 1 - engine() % 512 : engine() % size;
      corrupt[at] ^= static_cast<char>(1 + engine() % 255);
    }
    std::ofstream(file("corrupt.onnx"), std::ios::binary | std::ios::trunc) << corrupt;
    try {
      import_onnx(file("corrupt.onnx"));
      ++imported;
    } catch (const Error&) {
      ++rejected;
    }
  }
  // Both outcomes occur, so the corruption reaches the importer's own checks.
  EXPECT_GT(imported, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace occam
