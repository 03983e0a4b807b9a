// An independent oracle for the executors: every op of the IR written as plain loops over dense NCHW
// tensors, straight from the PyTorch/ONNX definitions, with no oneDNN and no layout tricks. Slow; for
// tests only.
#pragma once

#include "occam/error.hpp"
#include "occam/exec.hpp"
#include "occam/model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace occam::naive {

inline float activate(const Activation& a, float x) {
  switch (a.kind) {
    case ActKind::None: return x;
    case ActKind::Relu: return x > 0 ? x : 0.0f;
    case ActKind::LeakyRelu: return x > 0 ? x : a.lo * x;
    case ActKind::Clip: return std::min(std::max(x, a.lo), a.hi);
    case ActKind::Sigmoid: return 1.0f / (1.0f + std::exp(-x));
    case ActKind::Swish: return x / (1.0f + std::exp(-x));
    case ActKind::Tanh: return std::tanh(x);
    case ActKind::HardSigmoid: return std::max(0.0f, std::min(1.0f, a.lo * x + a.hi));
    case ActKind::HardSwish: return x * std::max(0.0f, std::min(1.0f, x / 6.0f + 0.5f));
  }
  return x;
}

inline size_t at(const Shape& s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return static_cast<size_t>(((n * s.c + c) * s.h + h) * s.w + w);
}

inline void conv(const Op& op, const HostTensor& x, HostTensor& y) {
  const Shape& in = x.shape;
  const Shape& out = y.shape;
  const Window& k = op.window;
  const int64_t cin = in.c / op.groups, cout = out.c / op.groups;
  const std::vector<float>& w = *op.weight;
  for (int64_t n = 0; n < out.n; ++n) {
    for (int64_t oc = 0; oc < out.c; ++oc) {
      float* dst = &y.values[at(out, n, oc, 0, 0)];
      std::fill(dst, dst + out.h * out.w, op.bias ? (*op.bias)[static_cast<size_t>(oc)] : 0.0f);
      const int64_t g = oc / cout;
      for (int64_t ic = 0; ic < cin; ++ic) {
        for (int64_t kh = 0; kh < k.kernel_h; ++kh) {
          for (int64_t kw = 0; kw < k.kernel_w; ++kw) {
            const float wv = w[static_cast<size_t>(((oc * cin + ic) * k.kernel_h + kh) * k.kernel_w + kw)];
            for (int64_t oh = 0; oh < out.h; ++oh) {
              const int64_t ih = oh * k.stride_h - k.pad_top + kh * k.dilation_h;
              if (ih < 0 || ih >= in.h) continue;
              const float* src = &x.values[at(in, n, g * cin + ic, ih, 0)];
              // Output columns whose input column iw = ow * stride + offset lies inside the row.
              const int64_t offset = kw * k.dilation_w - k.pad_left;
              const int64_t first = std::max<int64_t>(0, (-offset + k.stride_w - 1) / k.stride_w);
              const int64_t reach = in.w - 1 - offset;  // largest ow * stride that stays inside
              const int64_t last = reach < 0 ? 0 : std::min<int64_t>(out.w, reach / k.stride_w + 1);
              float* row = dst + oh * out.w;
              for (int64_t ow = first; ow < last; ++ow) row[ow] += wv * src[ow * k.stride_w + offset];
            }
          }
        }
      }
    }
  }
}

inline void max_pool(const Op& op, const HostTensor& x, HostTensor& y) {
  const Shape &in = x.shape, &out = y.shape;
  const Window& k = op.window;
  for (int64_t n = 0; n < out.n; ++n)
    for (int64_t c = 0; c < out.c; ++c)
      for (int64_t oh = 0; oh < out.h; ++oh)
        for (int64_t ow = 0; ow < out.w; ++ow) {
          float best = -std::numeric_limits<float>::infinity();
          for (int64_t kh = 0; kh < k.kernel_h; ++kh)
            for (int64_t kw = 0; kw < k.kernel_w; ++kw) {
              const int64_t ih = oh * k.stride_h - k.pad_top + kh * k.dilation_h;
              const int64_t iw = ow * k.stride_w - k.pad_left + kw * k.dilation_w;
              if (ih >= 0 && ih < in.h && iw >= 0 && iw < in.w) best = std::max(best, x.values[at(in, n, c, ih, iw)]);
            }
          y.values[at(out, n, c, oh, ow)] = best;
        }
}

// torch.nn.functional.avg_pool2d: the divisor counts padding up to the padded border, never beyond.
inline void avg_pool(const Op& op, const HostTensor& x, HostTensor& y) {
  const Shape &in = x.shape, &out = y.shape;
  const Window& k = op.window;
  if (k.dilation_h != 1 || k.dilation_w != 1) fail("naive avg_pool: dilation is not supported");
  for (int64_t n = 0; n < out.n; ++n)
    for (int64_t c = 0; c < out.c; ++c)
      for (int64_t oh = 0; oh < out.h; ++oh)
        for (int64_t ow = 0; ow < out.w; ++ow) {
          int64_t h0 = oh * k.stride_h - k.pad_top, w0 = ow * k.stride_w - k.pad_left;
          int64_t h1 = std::min(h0 + k.kernel_h, in.h + k.pad_bottom), w1 = std::min(w0 + k.kernel_w, in.w + k.pad_right);
          const int64_t padded = (h1 - h0) * (w1 - w0);
          h0 = std::max<int64_t>(h0, 0);
          w0 = std::max<int64_t>(w0, 0);
          h1 = std::min(h1, in.h);
          w1 = std::min(w1, in.w);
          float sum = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) sum += x.values[at(in, n, c, ih, iw)];
          const int64_t divisor = op.count_include_pad ? padded : (h1 - h0) * (w1 - w0);
          y.values[at(out, n, c, oh, ow)] = sum / static_cast<float>(divisor);
        }
}

// torch.nn.AdaptiveAvgPool2d: bin i covers [floor(i * in / out), ceil((i + 1) * in / out)).
inline void adaptive_avg_pool(const HostTensor& x, HostTensor& y) {
  const Shape &in = x.shape, &out = y.shape;
  for (int64_t n = 0; n < out.n; ++n)
    for (int64_t c = 0; c < out.c; ++c)
      for (int64_t oh = 0; oh < out.h; ++oh)
        for (int64_t ow = 0; ow < out.w; ++ow) {
          const int64_t h0 = oh * in.h / out.h, h1 = ((oh + 1) * in.h + out.h - 1) / out.h;
          const int64_t w0 = ow * in.w / out.w, w1 = ((ow + 1) * in.w + out.w - 1) / out.w;
          float sum = 0;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) sum += x.values[at(in, n, c, ih, iw)];
          y.values[at(out, n, c, oh, ow)] = sum / static_cast<float>((h1 - h0) * (w1 - w0));
        }
}

inline void gemm(const Op& op, const HostTensor& x, HostTensor& y) {
  const int64_t features = x.shape.image_elements();
  for (int64_t n = 0; n < y.shape.n; ++n)
    for (int64_t o = 0; o < y.shape.c; ++o) {
      float sum = op.bias ? (*op.bias)[static_cast<size_t>(o)] : 0.0f;
      for (int64_t i = 0; i < features; ++i) {
        sum += (*op.weight)[static_cast<size_t>(o * features + i)] * x.values[static_cast<size_t>(n * features + i)];
      }
      y.values[static_cast<size_t>(n * y.shape.c + o)] = sum;
    }
}

inline void binary(OpKind kind, const HostTensor& a, const HostTensor& b, HostTensor& y) {
  const Shape &sa = a.shape, &sb = b.shape, &out = y.shape;
  const auto pick = [](int64_t i, int64_t size) { return size == 1 ? 0 : i; };
  for (int64_t n = 0; n < out.n; ++n)
    for (int64_t c = 0; c < out.c; ++c)
      for (int64_t h = 0; h < out.h; ++h)
        for (int64_t w = 0; w < out.w; ++w) {
          const float u = a.values[at(sa, pick(n, sa.n), pick(c, sa.c), pick(h, sa.h), pick(w, sa.w))];
          const float v = b.values[at(sb, pick(n, sb.n), pick(c, sb.c), pick(h, sb.h), pick(w, sb.w))];
          y.values[at(out, n, c, h, w)] = kind == OpKind::Add ? u + v : kind == OpKind::Sub ? u - v : u * v;
        }
}

inline void softmax(const HostTensor& x, HostTensor& y) {
  const Shape& s = x.shape;
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t h = 0; h < s.h; ++h)
      for (int64_t w = 0; w < s.w; ++w) {
        double top = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int64_t c = 0; c < s.c; ++c) top = std::max(top, static_cast<double>(x.values[at(s, n, c, h, w)]));
        for (int64_t c = 0; c < s.c; ++c) sum += std::exp(x.values[at(s, n, c, h, w)] - top);
        for (int64_t c = 0; c < s.c; ++c) {
          y.values[at(s, n, c, h, w)] = static_cast<float>(std::exp(x.values[at(s, n, c, h, w)] - top) / sum);
        }
      }
}

// Runs `graph` op by op, every intermediate tensor materialised.
inline std::vector<HostTensor> run(const Graph& graph, const std::vector<HostTensor>& inputs) {
  std::vector<HostTensor> t(graph.tensors.size());
  for (size_t i = 0; i < graph.inputs.size(); ++i) t[static_cast<size_t>(graph.inputs[i])] = inputs[i];
  for (const Op& op : graph.ops) {
    const HostTensor& x = t[static_cast<size_t>(op.inputs[0])];
    HostTensor y(graph.output_of(op).shape);
    switch (op.kind) {
      case OpKind::Conv: conv(op, x, y); break;
      case OpKind::MaxPool: max_pool(op, x, y); break;
      case OpKind::AvgPool: avg_pool(op, x, y); break;
      case OpKind::GlobalAvgPool:
      case OpKind::AdaptiveAvgPool: adaptive_avg_pool(x, y); break;
      case OpKind::Gemm: gemm(op, x, y); break;
      case OpKind::BatchNorm:
        for (int64_t n = 0; n < y.shape.n; ++n)
          for (int64_t c = 0; c < y.shape.c; ++c)
            for (int64_t i = 0; i < y.shape.h * y.shape.w; ++i) {
              const size_t k = at(y.shape, n, c, 0, 0) + static_cast<size_t>(i);
              y.values[k] = x.values[k] * (*op.weight)[static_cast<size_t>(c)] + (*op.bias)[static_cast<size_t>(c)];
            }
        break;
      case OpKind::Add:
      case OpKind::Sub:
      case OpKind::Mul: binary(op.kind, x, t[static_cast<size_t>(op.inputs[1])], y); break;
      case OpKind::Concat: {
        auto out = y.values.begin();
        for (int64_t n = 0; n < y.shape.n; ++n) {
          for (TensorId part : op.inputs) {
            const HostTensor& p = t[static_cast<size_t>(part)];
            const auto begin = p.values.begin() + n * p.shape.image_elements();
            out = std::copy(begin, begin + p.shape.image_elements(), out);
          }
        }
        break;
      }
      case OpKind::Slice:
        for (int64_t n = 0; n < y.shape.n; ++n) {
          const auto begin = x.values.begin() + static_cast<int64_t>(at(x.shape, n, op.channel_offset, 0, 0));
          std::copy(begin, begin + y.shape.image_elements(), y.values.begin() + static_cast<int64_t>(at(y.shape, n, 0, 0, 0)));
        }
        break;
      case OpKind::ChannelShuffle: {
        // Output channel j * groups + g is input channel g * (C / groups) + j.
        const int64_t per_group = x.shape.c / op.groups, plane = x.shape.h * x.shape.w;
        for (int64_t n = 0; n < y.shape.n; ++n)
          for (int64_t g = 0; g < op.groups; ++g)
            for (int64_t j = 0; j < per_group; ++j) {
              const auto from = x.values.begin() + static_cast<int64_t>(at(x.shape, n, g * per_group + j, 0, 0));
              std::copy(from, from + plane, y.values.begin() + static_cast<int64_t>(at(y.shape, n, j * op.groups + g, 0, 0)));
            }
        break;
      }
      case OpKind::Activation:
      case OpKind::Flatten:
      case OpKind::Identity: y.values = x.values; break;
      case OpKind::Softmax: softmax(x, y); break;
    }
    for (float& v : y.values) v = activate(op.activation, v);
    t[static_cast<size_t>(op.output)] = std::move(y);
  }
  std::vector<HostTensor> outputs;
  for (TensorId o : graph.outputs) outputs.push_back(t[static_cast<size_t>(o)]);
  return outputs;
}

}  // namespace occam::naive
