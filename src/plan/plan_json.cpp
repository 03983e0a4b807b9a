#include "occam/error.hpp"
#include "occam/plan.hpp"

#include <nlohmann/json.hpp>

#include <fstream>

namespace occam {

namespace {

constexpr std::string_view kFormat = "occam-plan";
constexpr int kVersion = 1;

Fallback parse_fallback(std::string_view text, std::string_view where) {
  for (Fallback f : {Fallback::None, Fallback::StreamWeights, Fallback::ColumnStrips}) {
    if (to_string(f) == text) return f;
  }
  fail("{}: fallback \"{}\" is not one of none, stream-weights, column-strips", where, text);
}

// Reads a required field with a message that names it and the type expected.
template <typename T>
T field(const nlohmann::json& object, const char* key, std::string_view where) {
  const auto it = object.find(key);
  if (it == object.end()) fail("{}: missing field \"{}\"", where, key);
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: field \"{}\" has the wrong type ({})", where, key, it->type_name());
  }
}

}  // namespace

nlohmann::json to_json(const Plan& plan) {
  nlohmann::json partitions = nlohmann::json::array();
  for (const Partition& p : plan.partitions) {
    partitions.push_back({
        {"first_op", p.first_op},
        {"last_op", p.last_op},
        {"ops", p.ops},
        {"inputs", p.inputs},
        {"outputs", p.outputs},
        {"closure_bytes", p.closure_bytes},
        {"filter_bytes", p.filter_bytes},
        {"streamed_filter_bytes", p.streamed_filter_bytes},
        {"stream_buffer_bytes", p.stream_buffer_bytes},
        {"boundary_in_bytes", p.boundary_in_bytes},
        {"boundary_out_bytes", p.boundary_out_bytes},
        {"macs", p.macs},
        {"fallback", std::string(to_string(p.fallback))},
        {"fallback_bytes", p.fallback_bytes},
        {"column_strips", p.column_strips},
        {"note", p.note},
    });
  }
  return {
      {"format", kFormat},
      {"version", kVersion},
      {"model", plan.model},
      {"model_source", plan.model_source},
      {"input_shape", plan.input_shape},
      {"planner", plan.planner},
      {"capacity_bytes", plan.capacity_bytes},
      {"bytes_per_elem", plan.bytes_per_elem},
      {"granularity", std::string(to_string(plan.granularity))},
      {"batch", plan.batch},
      {"traffic_bytes", plan.traffic_bytes},
      {"filter_bytes", plan.filter_bytes},
      {"base_case_bytes", plan.base_case_bytes},
      {"full_reuse_bytes", plan.full_reuse_bytes},
      {"partitions", std::move(partitions)},
  };
}

Plan plan_from_json(const nlohmann::json& json) {
  if (!json.is_object()) fail("plan: expected a JSON object");
  if (field<std::string>(json, "format", "plan") != kFormat) fail("plan: \"format\" is not \"{}\"", kFormat);
  if (const int version = field<int>(json, "version", "plan"); version != kVersion) {
    fail("plan: version {} is not supported (expected {})", version, kVersion);
  }
  Plan plan;
  plan.model = field<std::string>(json, "model", "plan");
  plan.model_source = field<std::string>(json, "model_source", "plan");
  plan.input_shape = field<std::string>(json, "input_shape", "plan");
  plan.planner = field<std::string>(json, "planner", "plan");
  plan.capacity_bytes = field<int64_t>(json, "capacity_bytes", "plan");
  plan.bytes_per_elem = field<int>(json, "bytes_per_elem", "plan");
  plan.granularity = parse_granularity(field<std::string>(json, "granularity", "plan"));
  plan.batch = field<int64_t>(json, "batch", "plan");
  plan.traffic_bytes = field<int64_t>(json, "traffic_bytes", "plan");
  plan.filter_bytes = field<int64_t>(json, "filter_bytes", "plan");
  plan.base_case_bytes = field<int64_t>(json, "base_case_bytes", "plan");
  plan.full_reuse_bytes = field<int64_t>(json, "full_reuse_bytes", "plan");
  const auto partitions = field<nlohmann::json>(json, "partitions", "plan");
  if (!partitions.is_array()) fail("plan: field \"partitions\" must be an array");
  for (size_t i = 0; i < partitions.size(); ++i) {
    const std::string where = fmt::format("plan: partitions[{}]", i);
    const nlohmann::json& j = partitions[i];
    if (!j.is_object()) fail("{}: expected an object", where);
    Partition p;
    p.first_op = field<OpId>(j, "first_op", where);
    p.last_op = field<OpId>(j, "last_op", where);
    p.ops = field<std::vector<std::string>>(j, "ops", where);
    p.inputs = field<std::vector<std::string>>(j, "inputs", where);
    p.outputs = field<std::vector<std::string>>(j, "outputs", where);
    p.closure_bytes = field<int64_t>(j, "closure_bytes", where);
    p.filter_bytes = field<int64_t>(j, "filter_bytes", where);
    p.streamed_filter_bytes = field<int64_t>(j, "streamed_filter_bytes", where);
    p.stream_buffer_bytes = field<int64_t>(j, "stream_buffer_bytes", where);
    p.boundary_in_bytes = field<int64_t>(j, "boundary_in_bytes", where);
    p.boundary_out_bytes = field<int64_t>(j, "boundary_out_bytes", where);
    p.macs = field<int64_t>(j, "macs", where);
    p.fallback = parse_fallback(field<std::string>(j, "fallback", where), where);
    p.fallback_bytes = field<int64_t>(j, "fallback_bytes", where);
    p.column_strips = field<int64_t>(j, "column_strips", where);
    p.note = field<std::string>(j, "note", where);
    if (p.last_op < p.first_op || static_cast<size_t>(p.last_op - p.first_op + 1) != p.ops.size()) {
      fail("{}: ops {}..{} do not match its {} op names", where, p.first_op, p.last_op, p.ops.size());
    }
    const OpId expected_first = plan.partitions.empty() ? 0 : plan.partitions.back().last_op + 1;
    if (p.first_op != expected_first) fail("{}: starts at op {}, expected {}", where, p.first_op, expected_first);
    plan.partitions.push_back(std::move(p));
  }
  if (plan.partitions.empty()) fail("plan: has no partitions");
  return plan;
}

void save_plan(const Plan& plan, const std::filesystem::path& path) {
  std::ofstream out(path);
  if (!out) fail("{}: cannot write the plan", path.string());
  out << to_json(plan).dump(2) << '\n';
  if (!out) fail("{}: writing the plan failed", path.string());
}

Plan load_plan(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the plan file", path.string());
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
  try {
    return plan_from_json(json);
  } catch (const Error& e) {
    fail("{}: {}", path.string(), e.what());
  }
}

void check_plan_matches(const Plan& plan, const Graph& graph) {
  const std::string shape = graph.tensor(graph.inputs.at(0)).shape.str();
  if (plan.input_shape != shape) {
    fail("the plan was made for input {} of \"{}\", but the model's input is {}", plan.input_shape, plan.model, shape);
  }
  const OpId covered = plan.partitions.empty() ? 0 : plan.partitions.back().last_op + 1;
  if (covered != static_cast<OpId>(graph.ops.size())) {
    fail("the plan covers {} ops of \"{}\", but model \"{}\" has {}", covered, plan.model, graph.name, graph.ops.size());
  }
  for (const Partition& p : plan.partitions) {
    for (OpId o = p.first_op; o <= p.last_op; ++o) {
      if (graph.op(o).name != p.ops[static_cast<size_t>(o - p.first_op)]) {
        fail("the plan's op {} is \"{}\", but the model's is \"{}\": the plan was made for another model", o,
             p.ops[static_cast<size_t>(o - p.first_op)], graph.op(o).name);
      }
    }
  }
}

}  // namespace occam
