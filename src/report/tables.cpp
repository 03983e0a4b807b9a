#include "occam/error.hpp"
#include "occam/report.hpp"
#include "occam/units.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>

namespace occam {

namespace {

// Columns sized to their widest cell; the first `text_columns` left-aligned, the rest right-aligned.
class TextTable {
public:
  TextTable(std::vector<std::string> header, size_t text_columns)
      : header_(std::move(header)), text_columns_(text_columns) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void separator() { rows_.emplace_back(); }

  std::string str() const {
    std::vector<size_t> width(header_.size());
    for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
    for (const auto& row : rows_) {
      for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    }
    size_t total = 0;
    for (size_t w : width) total += w + 2;
    const std::string rule = std::string(total - 2, '-') + "\n";
    const auto line = [&](const std::vector<std::string>& row) {
      std::string text;
      for (size_t c = 0; c < width.size(); ++c) {
        const std::string cell = c < row.size() ? row[c] : "";
        text += (c == 0 ? "" : "  ") +
                (c < text_columns_ ? fmt::format("{:<{}}", cell, width[c]) : fmt::format("{:>{}}", cell, width[c]));
      }
      while (!text.empty() && text.back() == ' ') text.pop_back();
      return text + "\n";
    };
    std::string text = line(header_) + rule;
    for (const auto& row : rows_) text += row.empty() ? rule : line(row);
    return text;
  }

private:
  std::vector<std::string> header_;
  size_t text_columns_;
  std::vector<std::vector<std::string>> rows_;
};

std::string bytes(double value) { return format_bytes(value); }
std::string times(double x) { return x >= 100.0 ? fmt::format("{:.0f}x", x) : fmt::format("{:.2f}x", x); }
std::string seconds(double s) {
  if (s >= 1.0) return fmt::format("{:.3g} s", s);
  if (s >= 1e-3) return fmt::format("{:.3g} ms", s * 1e3);
  return fmt::format("{:.3g} us", s * 1e6);
}
std::string rate(double per_s) { return fmt::format("{:.4g}", per_s); }
std::string millijoules(double j) { return fmt::format("{:.3g}", j * 1e3); }
std::string percent(double fraction) { return fmt::format("{:+.0f}%", fraction * 100.0); }

// The Layer Fusion variant with the lower latency on this model.
const MethodResult& best_fusion(const Evaluation& e) {
  const MethodResult& reuse = e.method("fusion-reuse");
  const MethodResult& recompute = e.method("fusion-recompute");
  return reuse.latency_s <= recompute.latency_s ? reuse : recompute;
}

const MethodResult& reference_of(const Evaluation& e, std::string_view reference) {
  return reference == "fusion-best" ? best_fusion(e) : e.method(reference);
}

}  // namespace

std::string hardware_text(const Hardware& hw) {
  return fmt::format("hardware \"{}\": {} chips, {} on chip each, {:g} MACs/cycle at {:g} GHz, DRAM {:g} GB/s and "
                     "link {:g} GB/s per chip, {} B/element; energy {:g} pJ/MAC, {:g} pJ/B SRAM, {:g} pJ/B DRAM, "
                     "{:g} pJ/B link",
                     hw.name, hw.chips, bytes(static_cast<double>(hw.sram_bytes)), hw.macs_per_cycle, hw.clock_ghz,
                     hw.dram_gb_per_s, hw.link_gb_per_s, hw.bytes_per_element, hw.energy.mac_pj,
                     hw.energy.sram_byte_pj, hw.energy.dram_byte_pj, hw.energy.link_byte_pj);
}

namespace {

// Evaluations grouped by hardware, in order of first appearance.
std::vector<std::vector<const Evaluation*>> by_hardware(std::span<const Evaluation> evaluations) {
  std::vector<std::vector<const Evaluation*>> groups;
  for (const Evaluation& e : evaluations) {
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.front()->hardware == e.hardware; });
    if (it == groups.end()) {
      groups.push_back({&e});
    } else {
      it->push_back(&e);
    }
  }
  return groups;
}

std::vector<Evaluation> copies(const std::vector<const Evaluation*>& group) {
  std::vector<Evaluation> out;
  for (const Evaluation* e : group) out.push_back(*e);
  return out;
}

std::string table_for(const std::vector<const Evaluation*>& group) {
  const Evaluation& first = *group.front();
  std::string text = hardware_text(first.hardware) + "\n";
  text += "accounting: " + first.accounting.describe(first.hardware) + "\n";
  text += "per image; off-chip = DRAM + link bytes with filters amortised; latency = one mini-batch through every "
          "stage; throughput in steady state\n\n";
  TextTable table({"model", "method", "chips", "off-chip", "vs base", "filters", "latency", "images/s", "speedup",
                   "mJ", "energy"},
                  2);
  for (const Evaluation* e : group) {
    if (e != group.front()) table.separator();
    const MethodResult& base = e->method("base");
    for (const MethodResult& m : e->methods) {
      table.add({e->model, m.method, fmt::format("{}", m.chips), bytes(m.offchip_bytes),
                 times(base.offchip_bytes / m.offchip_bytes), bytes(m.filter_bytes), seconds(m.latency_s),
                 rate(m.throughput), times(m.throughput / base.throughput), millijoules(m.energy.total_j()),
                 percent(m.energy.total_j() / base.energy.total_j() - 1.0)});
    }
  }
  text += table.str();
  if (group.size() > 1) {
    const std::vector<Evaluation> all = copies(group);
    TextTable means({"geomean over " + std::to_string(group.size()) + " models", "vs", "fewer bytes", "latency",
                     "throughput", "energy"},
                    2);
    for (const char* reference : {"base", "fusion-best"}) {
      const bool vs_fusion = std::string_view(reference) == "fusion-best";
      for (const MethodResult& m : first.methods) {
        if (vs_fusion ? m.method.starts_with("fusion") : m.method == "base") continue;
        const RelativeMeans r = relative_means(all, m.method, reference);
        means.add({m.method, reference, times(r.traffic_x), times(r.latency_x), times(r.throughput_x),
                   percent(-r.energy_saving)});
      }
      if (!vs_fusion) means.separator();
    }
    text += "\n";
    text += means.str();
  }
  for (const Evaluation* e : group) {
    for (const std::string& note : e->notes) text += "note: " + note + "\n";
  }
  return text;
}

double geomean(const std::vector<double>& values) {
  double log_sum = 0.0;
  for (double v : values) log_sum += std::log(v);
  return std::exp(log_sum / static_cast<double>(values.size()));
}

}  // namespace

RelativeMeans relative_means(std::span<const Evaluation> evaluations, std::string_view method,
                             std::string_view reference) {
  if (evaluations.empty()) fail("geometric mean of {} vs {}: no models", method, reference);
  std::vector<double> traffic, latency, throughput, energy;
  for (const Evaluation& e : evaluations) {
    const MethodResult& m = e.method(method);
    const MethodResult& r = reference_of(e, reference);
    traffic.push_back(r.offchip_bytes / m.offchip_bytes);
    latency.push_back(r.latency_s / m.latency_s);
    throughput.push_back(m.throughput / r.throughput);
    energy.push_back(m.energy.total_j() / r.energy.total_j());
  }
  return {std::string(method), std::string(reference), geomean(traffic), geomean(latency), geomean(throughput),
          1.0 - geomean(energy)};
}

std::string comparison_text(std::span<const Evaluation> evaluations) {
  std::string text;
  for (const auto& group : by_hardware(evaluations)) {
    if (!text.empty()) text += "\n\n";
    text += table_for(group);
  }
  return text;
}

std::string paper_comparison_text(std::span<const Evaluation> evaluations) {
  std::string text;
  for (const auto& group : by_hardware(evaluations)) {
    const std::vector<Evaluation> all = copies(group);
    const RelativeMeans vs_base = relative_means(all, "occam", "base");
    const RelativeMeans stap_vs_base = relative_means(all, "occam+stap", "base");
    const RelativeMeans stap_vs_dp = relative_means(all, "occam+stap", "base-dp");
    const RelativeMeans vs_fusion = relative_means(all, "occam", "fusion-best");
    const RelativeMeans stap_vs_fusion = relative_means(all, "occam+stap", "fusion-best");
    const RelativeMeans stap_vs_fusion_dp = relative_means(all, "occam+stap", "fusion-dp");
    TextTable table({fmt::format("\"{}\", geomean of {} models", group.front()->hardware.name, all.size()), "paper",
                     "ours", "how ours is measured"},
                    1);
    table.add({"off-chip transfers vs base", "21x", times(vs_base.traffic_x), "occam vs layer by layer, bytes per image"});
    table.add({"performance vs base", "2.06x", times(vs_base.latency_x), "occam latency, one mini-batch"});
    table.add({"", "", times(stap_vs_base.throughput_x), "occam+stap throughput vs base on one chip"});
    table.add({"", "", times(stap_vs_dp.throughput_x), "occam+stap vs base data-parallel on the same chip budget"});
    table.add({"performance vs Layer Fusion", "1.36x", times(vs_fusion.latency_x), "occam latency vs best fusion"});
    table.add({"", "", times(stap_vs_fusion.throughput_x), "occam+stap throughput vs fusion on one chip"});
    table.add({"", "", times(stap_vs_fusion_dp.throughput_x), "occam+stap vs fusion data-parallel, same budget"});
    table.add({"energy vs base", "-33%", percent(-vs_base.energy_saving), "occam energy per image"});
    table.add({"energy vs Layer Fusion", "-24%", percent(-vs_fusion.energy_saving), "occam vs best fusion"});
    if (!text.empty()) text += "\n";
    text += table.str();
  }
  return text;
}

nlohmann::json comparison_json(std::span<const Evaluation> evaluations) {
  using nlohmann::json;
  json groups = json::array();
  for (const auto& group : by_hardware(evaluations)) {
    const Evaluation& first = *group.front();
    const Accounting& a = first.accounting;
    json models = json::array();
    for (const Evaluation* e : group) {
      json methods = json::array();
      for (const MethodResult& m : e->methods) {
        methods.push_back({{"method", m.method},
                           {"chips", m.chips},
                           {"stages", m.stages},
                           {"replicas", m.replicas},
                           {"offchip_bytes", m.offchip_bytes},
                           {"filter_bytes", m.filter_bytes},
                           {"macs", m.macs},
                           {"latency_s", m.latency_s},
                           {"throughput_images_per_s", m.throughput},
                           {"energy_j",
                            {{"mac", m.energy.mac_j},
                             {"sram", m.energy.sram_j},
                             {"dram", m.energy.dram_j},
                             {"link", m.energy.link_j},
                             {"total", m.energy.total_j()}}}});
      }
      models.push_back({{"model", e->model},
                        {"occam_partitions", e->occam.partitions.size()},
                        {"greedy_partitions", e->greedy.partitions.size()},
                        {"methods", std::move(methods)},
                        {"notes", e->notes}});
    }
    json means = json::array();
    if (group.size() > 1) {
      const std::vector<Evaluation> all = copies(group);
      for (const MethodResult& m : first.methods) {
        for (const char* reference : {"base", "fusion-best"}) {
          const RelativeMeans r = relative_means(all, m.method, reference);
          means.push_back({{"method", r.method},
                           {"reference", r.reference},
                           {"traffic_x", r.traffic_x},
                           {"latency_x", r.latency_x},
                           {"throughput_x", r.throughput_x},
                           {"energy_saving", r.energy_saving}});
        }
      }
    }
    groups.push_back({{"hardware", to_json(first.hardware)},
                      {"accounting",
                       {{"bytes_per_element", a.element_bytes(first.hardware)},
                        {"batch", a.batch},
                        {"stream", a.stream},
                        {"overlap", a.overlap},
                        {"handoff", to_string(a.handoff)},
                        {"granularity", to_string(a.granularity)},
                        {"description", a.describe(first.hardware)}}},
                      {"models", std::move(models)},
                      {"geomeans", std::move(means)}});
  }
  return groups;
}

std::string comparison_csv(std::span<const Evaluation> evaluations) {
  std::string text =
      "hardware,model,method,chips,stages,offchip_bytes,filter_bytes,macs,latency_s,throughput_images_per_s,"
      "energy_j,energy_mac_j,energy_sram_j,energy_dram_j,energy_link_j,bytes_per_element,batch,stream,overlap,handoff,"
      "granularity\n";
  for (const Evaluation& e : evaluations) {
    const Accounting& a = e.accounting;
    for (const MethodResult& m : e.methods) {
      text += fmt::format("{},{},{},{},{},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},"
                          "{},{},{},{},{},{}\n",
                          e.hardware.name, e.model, m.method, m.chips, m.stages, m.offchip_bytes, m.filter_bytes,
                          m.macs, m.latency_s, m.throughput, m.energy.total_j(), m.energy.mac_j, m.energy.sram_j,
                          m.energy.dram_j, m.energy.link_j, a.element_bytes(e.hardware), a.batch, a.stream,
                          a.overlap ? "max" : "sum", to_string(a.handoff), to_string(a.granularity));
    }
  }
  return text;
}

std::vector<BatchPoint> batch_sweep(const Graph& graph, const Hardware& hw, const Accounting& accounting,
                                    std::span<const int64_t> batches) {
  std::vector<BatchPoint> points;
  for (int64_t batch : batches) {
    Accounting a = accounting;
    a.batch = batch;
    const PlanOptions options = plan_options(hw, a);
    const Analysis analysis(graph, options.analysis);
    const Plan plan = plan_optimal(analysis, options);
    points.push_back({batch, static_cast<double>(plan.base_case_bytes),
                      static_cast<double>(plan.traffic_bytes) +
                          static_cast<double>(plan.filter_bytes) / static_cast<double>(a.stream)});
  }
  return points;
}

std::string batch_sweep_text(const std::string& model, std::span<const BatchPoint> points) {
  std::string text = fmt::format("{}: off-chip bytes per image vs mini-batch (base / occam):", model);
  for (const BatchPoint& p : points) {
    text += fmt::format("  B={} {} / {} = {}", p.batch, bytes(p.base_bytes), bytes(p.occam_bytes),
                        times(p.base_bytes / p.occam_bytes));
  }
  return text + "\n";
}

}  // namespace occam
