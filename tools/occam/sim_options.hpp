// Options of the commands that cost plans on hardware (simulate, compare, report): the hardware
// description with its overrides, and every accounting assumption, read the same way by each.
#pragma once

#include "occam/sim.hpp"

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace occam::cli {

struct HardwareArgs {
  std::vector<std::string> hardware;  // preset names or JSON files; none: the default preset
  int chips = 0;         // 0: the hardware's
  std::string sram;      // empty: the hardware's
  int bytes_per_elem = 0;
  int64_t minibatch = 1;
  int64_t stream = 1000;
  std::string overlap = "max";
  std::string handoff = "dram";
  std::string granularity = "row";
};
// The models a comparison covers (default: the paper's six) and their shared --resolution.
void add_model_list_options(CLI::App& command, std::vector<std::string>& models, std::string& resolution);

// `several`: --hw may be repeated (one table per hardware).
void add_hardware_options(CLI::App& command, HardwareArgs& args, bool several = false);
// The hardware named by `spec` (empty: the default) with --chips and --sram applied.
Hardware resolve_hardware(const HardwareArgs& args, const std::string& spec);
Accounting resolve_accounting(const HardwareArgs& args);

// Reports progress of a long sweep on stderr, once it has run for a second, when stderr is a terminal.
class ProgressLine {
public:
  explicit ProgressLine(std::string what);
  ~ProgressLine();
  void operator()(int done, int total);

private:
  std::string what_;
  double start_s_;
  bool terminal_;
  bool shown_ = false;
};

}  // namespace occam::cli
