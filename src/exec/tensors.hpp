// What the executors share around a compiled program: the caller's tensors checked against the
// compiled shapes, and the Executor that wraps the program.
#pragma once

#include "occam/exec.hpp"

#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace occam::exec {

// Throws an Error naming `source` unless `given` has exactly the `expected` shapes and sizes.
void check_tensors(std::string_view source, std::string_view what, std::span<const Shape> expected,
                   std::span<const HostTensor> given);

// An Executor over a compiled program with run(inputs, outputs), memory_account(), input_shapes()
// and output_shapes() (and thread_waits(), where it has one); `source` names the model in errors,
// `description` is what describe() says.
template <class Program>
class ProgramExecutor final : public Executor {
public:
  ProgramExecutor(std::unique_ptr<Program> program, std::string source, std::string description)
      : program_(std::move(program)), source_(std::move(source)), description_(std::move(description)) {}

  using Executor::run;
  void run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs) override {
    check_tensors(source_, "input", program_->input_shapes(), inputs);
    check_tensors(source_, "output", program_->output_shapes(), {outputs.data(), outputs.size()});
    program_->run(inputs, outputs);
  }
  const MemoryAccount& memory() const override { return program_->memory_account(); }
  std::string describe() const override { return description_; }
  std::span<const Shape> input_shapes() const override { return program_->input_shapes(); }
  std::span<const Shape> output_shapes() const override { return program_->output_shapes(); }
  std::vector<double> thread_waits() const override {
    if constexpr (requires { program_->thread_waits(); }) {
      return program_->thread_waits();
    } else {
      return {};
    }
  }

private:
  std::unique_ptr<Program> program_;
  std::string source_;
  std::string description_;
};

}  // namespace occam::exec
