// The built-in model zoo: torchvision's definitions (v0.14), layer for layer, so that parameter
// counts match torchvision exactly, plus DnCNN (Zhang et al., TIP 2017) as a high-resolution net.
#include "occam/error.hpp"
#include "occam/model.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <random>

namespace occam {
namespace {

constexpr std::array kZoo = {
    ZooEntry{"alexnet", "AlexNet (torchvision), 5 conv + 3 FC", {224, 224}},
    ZooEntry{"vgg16", "VGG-16 (torchvision, configuration D), 13 conv + 3 FC", {224, 224}},
    ZooEntry{"resnet18", "ResNet-18 (torchvision), basic blocks", {224, 224}},
    ZooEntry{"resnet50", "ResNet-50 (torchvision v1.5), bottleneck blocks", {224, 224}},
    ZooEntry{"mobilenet_v2", "MobileNetV2 (torchvision), inverted residuals, depthwise", {224, 224}},
    ZooEntry{"googlenet", "GoogLeNet (torchvision, no aux heads), inception blocks", {224, 224}},
    ZooEntry{"dncnn", "DnCNN denoiser, 17 conv layers of 64 channels, grayscale", {1080, 1920}},
};

// Seeded parameter generator: a fixed 64-bit Mersenne Twister with our own float conversion, so
// the values are the same with every standard library.
class WeightSource {
public:
  explicit WeightSource(uint64_t seed) : engine_(seed) {}

  float uniform(float lo, float hi) {
    const double unit = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
    return static_cast<float>(lo + (hi - lo) * unit);
  }
  Buffer fill(size_t count, float lo, float hi) {
    auto values = std::make_shared<std::vector<float>>(count);
    for (float& v : *values) v = uniform(lo, hi);
    return values;
  }

private:
  std::mt19937_64 engine_;
};

// Layer vocabulary shared by the zoo's definitions.
class NetBuilder {
public:
  NetBuilder(std::string_view name, const ModelOptions& options)
      : builder_(std::string(name), std::string(name)), options_(options), weights_(options.weight_seed) {}

  TensorId input(int64_t channels, Resolution resolution) {
    return builder_.input("input", {options_.batch, channels, resolution.h, resolution.w});
  }

  TensorId conv(TensorId x, const std::string& name, int64_t out, int kernel, int stride, int pad, int groups = 1,
                bool bias = true) {
    Op op;
    op.name = name;
    op.kind = OpKind::Conv;
    op.inputs = {x};
    op.out_channels = out;
    op.window = Window::square(kernel, stride, pad);
    op.groups = groups;
    op.has_bias = bias;
    if (options_.with_weights) {
      // Kaiming-uniform bound (PyTorch's default conv init): keeps activations O(1) through depth.
      const int64_t fan_in = builder_.shape(x).c / groups * kernel * kernel;
      const float bound = std::sqrt(6.0f / static_cast<float>(fan_in));
      op.weight = weights_.fill(static_cast<size_t>(out * fan_in), -bound, bound);
      if (bias) op.bias = weights_.fill(static_cast<size_t>(out), -0.1f, 0.1f);
    }
    return builder_.add(std::move(op));
  }

  TensorId batchnorm(TensorId x, const std::string& name, float epsilon = 1e-5f) {
    Op op;
    op.name = name;
    op.kind = OpKind::BatchNorm;
    op.inputs = {x};
    if (options_.with_weights) {
      const auto channels = static_cast<size_t>(builder_.shape(x).c);
      auto scale = std::make_shared<std::vector<float>>(channels);
      auto shift = std::make_shared<std::vector<float>>(channels);
      for (size_t c = 0; c < channels; ++c) {
        const float gamma = weights_.uniform(0.5f, 1.5f);
        const float beta = weights_.uniform(-0.2f, 0.2f);
        const float mean = weights_.uniform(-0.2f, 0.2f);
        const float var = weights_.uniform(0.5f, 1.5f);
        (*scale)[c] = gamma / std::sqrt(var + epsilon);
        (*shift)[c] = beta - mean * (*scale)[c];
      }
      op.weight = std::move(scale);
      op.bias = std::move(shift);
    }
    return builder_.add(std::move(op));
  }

  TensorId activation(TensorId x, const std::string& name, Activation act) {
    Op op;
    op.name = name;
    op.kind = OpKind::Activation;
    op.inputs = {x};
    op.activation = act;
    return builder_.add(std::move(op));
  }
  TensorId relu(TensorId x, const std::string& name) { return activation(x, name, Activation::relu()); }

  TensorId pool(TensorId x, const std::string& name, OpKind kind, int kernel, int stride, int pad = 0,
                bool ceil_mode = false) {
    Op op;
    op.name = name;
    op.kind = kind;
    op.inputs = {x};
    op.window = Window::square(kernel, stride, pad);
    op.window.ceil_mode = ceil_mode;
    return builder_.add(std::move(op));
  }

  TensorId global_avgpool(TensorId x, const std::string& name) { return unary(x, name, OpKind::GlobalAvgPool); }

  // torchvision's AdaptiveAvgPool2d before the classifier; an identity at the default resolution.
  TensorId adaptive_avgpool(TensorId x, const std::string& name, int64_t size) {
    const Shape& in = builder_.shape(x);
    if (in.h == size && in.w == size) return x;
    Op op;
    op.name = name;
    op.kind = OpKind::AdaptiveAvgPool;
    op.inputs = {x};
    op.pooled = {size, size};
    return builder_.add(std::move(op));
  }

  TensorId linear(TensorId x, const std::string& name, int64_t out) {
    Op op;
    op.name = name;
    op.kind = OpKind::Gemm;
    op.inputs = {x};
    op.out_channels = out;
    op.has_bias = true;
    if (options_.with_weights) {
      const int64_t in = builder_.shape(x).image_elements();
      const float bound = std::sqrt(6.0f / static_cast<float>(in));
      op.weight = weights_.fill(static_cast<size_t>(in * out), -bound, bound);
      op.bias = weights_.fill(static_cast<size_t>(out), -0.1f, 0.1f);
    }
    return builder_.add(std::move(op));
  }

  TensorId binary(TensorId a, TensorId b, const std::string& name, OpKind kind) {
    Op op;
    op.name = name;
    op.kind = kind;
    op.inputs = {a, b};
    return builder_.add(std::move(op));
  }

  TensorId concat(std::vector<TensorId> parts, const std::string& name) {
    Op op;
    op.name = name;
    op.kind = OpKind::Concat;
    op.inputs = std::move(parts);
    return builder_.add(std::move(op));
  }

  TensorId unary(TensorId x, const std::string& name, OpKind kind) {
    Op op;
    op.name = name;
    op.kind = kind;
    op.inputs = {x};
    return builder_.add(std::move(op));
  }

  // conv (no bias) + BatchNorm + activation: torchvision's Conv2dNormActivation / BasicConv2d.
  TensorId conv_bn(TensorId x, const std::string& name, int64_t out, int kernel, int stride, int pad,
                   Activation act, int groups = 1, float epsilon = 1e-5f) {
    x = conv(x, name, out, kernel, stride, pad, groups, false);
    x = batchnorm(x, name + ".bn", epsilon);
    if (act.kind != ActKind::None) x = activation(x, name + ".act", act);
    return x;
  }

  int64_t channels(TensorId x) const { return builder_.shape(x).c; }

  Graph finish(TensorId output) && {
    builder_.mark_output(output);
    return std::move(builder_).finish();
  }

private:
  GraphBuilder builder_;
  ModelOptions options_;
  WeightSource weights_;
};

TensorId classifier_flatten(NetBuilder& net, TensorId x) { return net.unary(x, "flatten", OpKind::Flatten); }

Graph alexnet(NetBuilder net, Resolution res) {
  TensorId x = net.input(3, res);
  x = net.relu(net.conv(x, "features.0", 64, 11, 4, 2), "features.1");
  x = net.pool(x, "features.2", OpKind::MaxPool, 3, 2);
  x = net.relu(net.conv(x, "features.3", 192, 5, 1, 2), "features.4");
  x = net.pool(x, "features.5", OpKind::MaxPool, 3, 2);
  x = net.relu(net.conv(x, "features.6", 384, 3, 1, 1), "features.7");
  x = net.relu(net.conv(x, "features.8", 256, 3, 1, 1), "features.9");
  x = net.relu(net.conv(x, "features.10", 256, 3, 1, 1), "features.11");
  x = net.pool(x, "features.12", OpKind::MaxPool, 3, 2);
  x = net.adaptive_avgpool(x, "avgpool", 6);
  x = classifier_flatten(net, x);
  x = net.unary(x, "classifier.0", OpKind::Identity);
  x = net.relu(net.linear(x, "classifier.1", 4096), "classifier.2");
  x = net.unary(x, "classifier.3", OpKind::Identity);
  x = net.relu(net.linear(x, "classifier.4", 4096), "classifier.5");
  x = net.linear(x, "classifier.6", 1000);
  return std::move(net).finish(x);
}

Graph vgg16(NetBuilder net, Resolution res) {
  constexpr std::array<int, 18> cfg = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
  TensorId x = net.input(3, res);
  int index = 0;
  for (int channels : cfg) {
    if (channels == 0) {
      x = net.pool(x, fmt::format("features.{}", index++), OpKind::MaxPool, 2, 2);
    } else {
      x = net.conv(x, fmt::format("features.{}", index++), channels, 3, 1, 1);
      x = net.relu(x, fmt::format("features.{}", index++));
    }
  }
  x = net.adaptive_avgpool(x, "avgpool", 7);
  x = classifier_flatten(net, x);
  x = net.relu(net.linear(x, "classifier.0", 4096), "classifier.1");
  x = net.unary(x, "classifier.2", OpKind::Identity);
  x = net.relu(net.linear(x, "classifier.3", 4096), "classifier.4");
  x = net.unary(x, "classifier.5", OpKind::Identity);
  x = net.linear(x, "classifier.6", 1000);
  return std::move(net).finish(x);
}

TensorId resnet_stem(NetBuilder& net, TensorId x) {
  x = net.conv_bn(x, "conv1", 64, 7, 2, 3, Activation::relu());
  return net.pool(x, "maxpool", OpKind::MaxPool, 3, 2, 1);
}

TensorId resnet_shortcut(NetBuilder& net, TensorId x, const std::string& name, int64_t out, int stride) {
  if (stride == 1 && net.channels(x) == out) return x;
  return net.conv_bn(x, name + ".downsample", out, 1, stride, 0, {});
}

// The shortcut is built after the main path, as torchvision's forward() (and so its ONNX export)
// orders it: the partitioner cuts the topological order, and this order lets the block input's
// rows wait for the main path without an extra tensor crossing a cut.
TensorId basic_block(NetBuilder& net, TensorId x, const std::string& name, int64_t planes, int stride) {
  TensorId y = net.conv_bn(x, name + ".conv1", planes, 3, stride, 1, Activation::relu());
  y = net.conv_bn(y, name + ".conv2", planes, 3, 1, 1, {});
  const TensorId shortcut = resnet_shortcut(net, x, name, planes, stride);
  return net.relu(net.binary(y, shortcut, name + ".add", OpKind::Add), name + ".relu");
}

TensorId bottleneck(NetBuilder& net, TensorId x, const std::string& name, int64_t planes, int stride) {
  TensorId y = net.conv_bn(x, name + ".conv1", planes, 1, 1, 0, Activation::relu());
  y = net.conv_bn(y, name + ".conv2", planes, 3, stride, 1, Activation::relu());
  y = net.conv_bn(y, name + ".conv3", planes * 4, 1, 1, 0, {});
  const TensorId shortcut = resnet_shortcut(net, x, name, planes * 4, stride);
  return net.relu(net.binary(y, shortcut, name + ".add", OpKind::Add), name + ".relu");
}

Graph resnet(NetBuilder net, Resolution res, std::array<int, 4> blocks, bool use_bottleneck) {
  TensorId x = resnet_stem(net, net.input(3, res));
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t planes = 64 << stage;
    for (int b = 0; b < blocks[static_cast<size_t>(stage)]; ++b) {
      const std::string name = fmt::format("layer{}.{}", stage + 1, b);
      const int stride = (stage > 0 && b == 0) ? 2 : 1;
      x = use_bottleneck ? bottleneck(net, x, name, planes, stride) : basic_block(net, x, name, planes, stride);
    }
  }
  x = net.global_avgpool(x, "avgpool");
  x = classifier_flatten(net, x);
  x = net.linear(x, "fc", 1000);
  return std::move(net).finish(x);
}

Graph mobilenet_v2(NetBuilder net, Resolution res) {
  struct Stage {
    int expand;
    int64_t channels;
    int repeats;
    int stride;
  };
  constexpr std::array<Stage, 7> stages = {{{1, 16, 1, 1},
                                            {6, 24, 2, 2},
                                            {6, 32, 3, 2},
                                            {6, 64, 4, 2},
                                            {6, 96, 3, 1},
                                            {6, 160, 3, 2},
                                            {6, 320, 1, 1}}};
  TensorId x = net.conv_bn(net.input(3, res), "features.0", 32, 3, 2, 1, Activation::relu6());
  int index = 1;
  for (const Stage& stage : stages) {
    for (int r = 0; r < stage.repeats; ++r) {
      const std::string name = fmt::format("features.{}", index++);
      const int stride = r == 0 ? stage.stride : 1;
      const int64_t in = net.channels(x);
      const int64_t hidden = in * stage.expand;
      TensorId y = x;
      if (stage.expand != 1) y = net.conv_bn(y, name + ".expand", hidden, 1, 1, 0, Activation::relu6());
      y = net.conv_bn(y, name + ".dw", hidden, 3, stride, 1, Activation::relu6(), static_cast<int>(hidden));
      y = net.conv_bn(y, name + ".project", stage.channels, 1, 1, 0, {});
      x = (stride == 1 && in == stage.channels) ? net.binary(y, x, name + ".add", OpKind::Add) : y;
    }
  }
  x = net.conv_bn(x, fmt::format("features.{}", index), 1280, 1, 1, 0, Activation::relu6());
  x = net.global_avgpool(x, "avgpool");
  x = classifier_flatten(net, x);
  x = net.unary(x, "classifier.0", OpKind::Identity);
  x = net.linear(x, "classifier.1", 1000);
  return std::move(net).finish(x);
}

TensorId inception(NetBuilder& net, TensorId x, const std::string& name, int64_t ch1x1, int64_t ch3x3red,
                   int64_t ch3x3, int64_t ch5x5red, int64_t ch5x5, int64_t pool_proj) {
  constexpr float eps = 1e-3f;
  const Activation relu = Activation::relu();
  const TensorId b1 = net.conv_bn(x, name + ".branch1", ch1x1, 1, 1, 0, relu, 1, eps);
  TensorId b2 = net.conv_bn(x, name + ".branch2.0", ch3x3red, 1, 1, 0, relu, 1, eps);
  b2 = net.conv_bn(b2, name + ".branch2.1", ch3x3, 3, 1, 1, relu, 1, eps);
  // torchvision uses a 3x3 kernel in the "5x5" branch (a known deviation from the paper, kept
  // for weight compatibility); so do we.
  TensorId b3 = net.conv_bn(x, name + ".branch3.0", ch5x5red, 1, 1, 0, relu, 1, eps);
  b3 = net.conv_bn(b3, name + ".branch3.1", ch5x5, 3, 1, 1, relu, 1, eps);
  TensorId b4 = net.pool(x, name + ".branch4.0", OpKind::MaxPool, 3, 1, 1, true);
  b4 = net.conv_bn(b4, name + ".branch4.1", pool_proj, 1, 1, 0, relu, 1, eps);
  return net.concat({b1, b2, b3, b4}, name + ".concat");
}

Graph googlenet(NetBuilder net, Resolution res) {
  constexpr float eps = 1e-3f;
  const Activation relu = Activation::relu();
  TensorId x = net.conv_bn(net.input(3, res), "conv1", 64, 7, 2, 3, relu, 1, eps);
  x = net.pool(x, "maxpool1", OpKind::MaxPool, 3, 2, 0, true);
  x = net.conv_bn(x, "conv2", 64, 1, 1, 0, relu, 1, eps);
  x = net.conv_bn(x, "conv3", 192, 3, 1, 1, relu, 1, eps);
  x = net.pool(x, "maxpool2", OpKind::MaxPool, 3, 2, 0, true);
  x = inception(net, x, "inception3a", 64, 96, 128, 16, 32, 32);
  x = inception(net, x, "inception3b", 128, 128, 192, 32, 96, 64);
  x = net.pool(x, "maxpool3", OpKind::MaxPool, 3, 2, 0, true);
  x = inception(net, x, "inception4a", 192, 96, 208, 16, 48, 64);
  x = inception(net, x, "inception4b", 160, 112, 224, 24, 64, 64);
  x = inception(net, x, "inception4c", 128, 128, 256, 24, 64, 64);
  x = inception(net, x, "inception4d", 112, 144, 288, 32, 64, 64);
  x = inception(net, x, "inception4e", 256, 160, 320, 32, 128, 128);
  x = net.pool(x, "maxpool4", OpKind::MaxPool, 2, 2, 0, true);
  x = inception(net, x, "inception5a", 256, 160, 320, 32, 128, 128);
  x = inception(net, x, "inception5b", 384, 192, 384, 48, 128, 128);
  x = net.global_avgpool(x, "avgpool");
  x = classifier_flatten(net, x);
  x = net.unary(x, "dropout", OpKind::Identity);
  x = net.linear(x, "fc", 1000);
  return std::move(net).finish(x);
}

// DnCNN-S (Zhang et al. 2017): conv+ReLU, 15 x (conv+BN+ReLU), conv; predicts the noise residual.
Graph dncnn(NetBuilder net, Resolution res) {
  TensorId x = net.relu(net.conv(net.input(1, res), "layers.0", 64, 3, 1, 1), "layers.0.relu");
  for (int i = 1; i <= 15; ++i) {
    x = net.conv_bn(x, fmt::format("layers.{}", i), 64, 3, 1, 1, Activation::relu());
  }
  x = net.conv(x, "layers.16", 1, 3, 1, 1, 1, false);
  return std::move(net).finish(x);
}

}  // namespace

std::span<const ZooEntry> zoo_models() { return kZoo; }

Graph zoo_model(std::string_view name, const ModelOptions& options) {
  const auto entry = std::find_if(kZoo.begin(), kZoo.end(), [&](const ZooEntry& e) { return e.name == name; });
  if (entry == kZoo.end()) {
    std::string known;
    for (const ZooEntry& e : kZoo) known += fmt::format("{}{}", known.empty() ? "" : ", ", e.name);
    fail("unknown model \"{}\": not a zoo name ({}) and not an .onnx file", name, known);
  }
  if (options.batch < 1) fail("{}: batch must be >= 1, got {}", name, options.batch);
  const Resolution res = options.resolution.value_or(entry->default_resolution);
  NetBuilder net(name, options);
  if (name == "alexnet") return alexnet(std::move(net), res);
  if (name == "vgg16") return vgg16(std::move(net), res);
  if (name == "resnet18") return resnet(std::move(net), res, {2, 2, 2, 2}, false);
  if (name == "resnet50") return resnet(std::move(net), res, {3, 4, 6, 3}, true);
  if (name == "mobilenet_v2") return mobilenet_v2(std::move(net), res);
  if (name == "googlenet") return googlenet(std::move(net), res);
  return dncnn(std::move(net), res);
}

}  // namespace occam
