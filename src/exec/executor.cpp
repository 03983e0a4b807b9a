#include "exec/tensors.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace occam {

std::vector<HostTensor> Executor::run(std::span<const HostTensor> inputs) {
  std::vector<HostTensor> outputs;
  for (const Shape& shape : output_shapes()) outputs.emplace_back(shape);
  run(inputs, outputs);
  return outputs;
}

RunTimes time_runs(Executor& executor, std::span<const HostTensor> inputs, std::span<HostTensor> outputs, int runs) {
  if (runs < 1) fail("the number of timed runs must be >= 1, got {}", runs);
  executor.run(inputs, outputs);
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    executor.run(inputs, outputs);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  const size_t mid = ms.size() / 2;
  const double median = ms.size() % 2 == 1 ? ms[mid] : (ms[mid - 1] + ms[mid]) / 2;
  return {ms.front(), median, runs};
}

double max_relative_error(const HostTensor& a, const HostTensor& b) {
  if (a.shape != b.shape || a.values.size() != b.values.size()) {
    fail("cannot compare tensors of shapes {} and {}", a.shape.str(), b.shape.str());
  }
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.values.size(); ++i) {
    // A NaN anywhere must not compare as "no error".
    const double d = std::fabs(static_cast<double>(a.values[i]) - static_cast<double>(b.values[i]));
    diff = std::isnan(d) ? d : std::max(diff, d);
    if (std::isnan(diff)) break;
    scale = std::max(scale, std::fabs(static_cast<double>(b.values[i])));
  }
  if (std::isnan(diff)) return diff;
  if (scale == 0) return diff == 0 ? 0 : std::numeric_limits<double>::infinity();
  return diff / scale;
}

std::vector<ClassScore> top_k(const HostTensor& output, int k, int64_t batch_index) {
  const int64_t classes = output.shape.image_elements();
  if (batch_index < 0 || batch_index >= output.shape.n) {
    fail("image {} of a batch of {}: out of range", batch_index, output.shape.n);
  }
  const auto first = output.values.begin() + batch_index * classes;
  std::vector<int64_t> order(static_cast<size_t>(classes));
  std::iota(order.begin(), order.end(), int64_t{0});
  const auto count = static_cast<size_t>(std::clamp<int64_t>(k, 0, classes));
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(count), order.end(),
                    [&](int64_t x, int64_t y) { return first[x] > first[y]; });
  std::vector<ClassScore> best;
  for (size_t i = 0; i < count; ++i) best.push_back({order[i], first[order[i]]});
  return best;
}

namespace exec {

void check_tensors(std::string_view source, std::string_view what, std::span<const Shape> expected,
                   std::span<const HostTensor> given) {
  if (given.size() != expected.size()) {
    fail("{}: expected {} {} tensor{}, got {}", source, expected.size(), what, expected.size() == 1 ? "" : "s",
         given.size());
  }
  for (size_t i = 0; i < given.size(); ++i) {
    if (given[i].shape != expected[i] || given[i].values.size() != static_cast<size_t>(expected[i].elements())) {
      fail("{}: {} {} has shape {} ({} values), expected {}", source, what, i, given[i].shape.str(),
           given[i].values.size(), expected[i].str());
    }
  }
}

}  // namespace exec
}  // namespace occam
