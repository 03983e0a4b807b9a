#include "commands.hpp"
#include "occam/error.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <exception>

int main(int argc, char** argv) {
  CLI::App app{"occam: optimal data reuse for convolutional neural networks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "occam 0.1.0");
  occam::cli::Action action;
  occam::cli::add_models_command(app, action);
  occam::cli::add_analyze_command(app, action);
  occam::cli::add_plan_command(app, action);
  occam::cli::add_simulate_command(app, action);
  occam::cli::add_compare_command(app, action);
  occam::cli::add_report_command(app, action);
  occam::cli::add_run_command(app, action);
  occam::cli::add_pipeline_command(app, action);
  try {
    std::vector<std::string> arguments = occam::cli::pipeline_alias(argc, argv);
    std::reverse(arguments.begin(), arguments.end());  // CLI11 takes them last-first
    app.parse(arguments);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return action();
  } catch (const occam::Error& e) {
    fmt::print(stderr, "occam: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "occam: internal error: {}\n", e.what());
    return 2;
  }
}
