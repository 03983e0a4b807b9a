#include "commands.hpp"
#include "occam/model.hpp"
#include "table.hpp"

namespace occam::cli {

void add_models_command(CLI::App& app, Action& action) {
  auto* command = app.add_subcommand("models", "list the built-in model zoo");
  command->callback([&action]() {
    action = []() {
      Table table({"model", "description", "input", "params", "GMACs"}, 2);
      for (const ZooEntry& entry : zoo_models()) {
        const Graph g = zoo_model(entry.name);
        table.add({std::string(entry.name), std::string(entry.description), g.tensor(g.inputs[0]).shape.str(),
                 fmt::format("{}", total_source_params(g)), fmt::format("{:.3f}", static_cast<double>(total_macs(g)) / 1e9)});
      }
      table.print();
      fmt::print("\nAny model takes --resolution HxW; an .onnx path works wherever a model name does.\n");
      return 0;
    };
  });
}

}  // namespace occam::cli
