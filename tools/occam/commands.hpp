// Each `occam` subcommand lives in its own file and registers itself on the CLI11 app here.
// Options shared by every command (model, resolution, hardware, plan) are added the same way
// everywhere through the helpers below, so that all commands read their inputs alike.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace occam::cli {

// The action to run once parsing succeeded; set by the chosen subcommand.
using Action = std::function<int()>;

void add_models_command(CLI::App& app, Action& action);
void add_analyze_command(CLI::App& app, Action& action);
void add_plan_command(CLI::App& app, Action& action);
void add_simulate_command(CLI::App& app, Action& action);
void add_compare_command(CLI::App& app, Action& action);
void add_report_command(CLI::App& app, Action& action);
void add_run_command(CLI::App& app, Action& action);
void add_pipeline_command(CLI::App& app, Action& action);

// `occam run MODEL --pipeline ...` is `occam pipeline MODEL ...` (the and users' spelling
// under mpirun): rewrites the arguments in place before parsing.
std::vector<std::string> pipeline_alias(int argc, char** argv);

}  // namespace occam::cli
