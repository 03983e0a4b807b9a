// Plots drawn by gnuplot (Debian package gnuplot-nox). Each plot leaves its data file and its
// script in the output folder, so that it can be redrawn or restyled by hand.
#include "occam/error.hpp"
#include "occam/report.hpp"
#include "occam/units.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

extern char** environ;

namespace occam {

namespace {

namespace fs = std::filesystem;

// gnuplot string literal: single quotes, with embedded quotes doubled.
std::string quoted(const fs::path& path) {
  std::string text = "'";
  for (char c : path.string()) text += c == '\'' ? std::string("''") : std::string(1, c);
  return text + "'";
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream file(path);
  if (!file || !(file << text) || !(file.flush())) fail("{}: cannot write", path.string());
}

void run_gnuplot(const fs::path& script) {
  const char* path_env = std::getenv("PATH");
  std::string dirs = path_env != nullptr ? path_env : "/usr/bin:/bin";
  bool found = false;
  for (size_t start = 0; start <= dirs.size() && !found;) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    found = ::access((fs::path(dirs.substr(start, end - start)) / "gnuplot").c_str(), X_OK) == 0;
    start = end + 1;
  }
  if (!found) fail("gnuplot is not on PATH; install it (Debian: apt-get install gnuplot-nox) to draw plots");
  std::string program = "gnuplot";
  std::string argument = script.string();
  char* argv[] = {program.data(), argument.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv, environ) != 0) fail("cannot start gnuplot");
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail("gnuplot failed on {} (its message is above)", script.string());
  }
}

// Writes `data` and a script that draws `body` once per terminal (PNG, SVG), then runs it.
std::vector<fs::path> draw(const fs::path& dir, const std::string& name, const std::string& data,
                           const std::string& size, const std::string& body) {
  fs::create_directories(dir);
  const fs::path data_file = fs::absolute(dir / (name + ".dat"));
  const fs::path script = fs::absolute(dir / (name + ".gp"));
  write_file(data_file, data);
  std::string text = fmt::format("# Drawn by occam; redraw with: gnuplot {}\ndata = {}\n", script.filename().string(),
                                 quoted(data_file));
  std::vector<fs::path> files = {data_file, script};
  for (const auto& [terminal, extension] : {std::pair{"pngcairo", "png"}, std::pair{"svg", "svg"}}) {
    const fs::path out = fs::absolute(dir / (name + "." + extension));
    text += fmt::format("set terminal {} noenhanced size {} font 'sans,10'\nset output {}\n{}\nunset output\n", terminal, size,
                        quoted(out), body);
    files.push_back(out);
  }
  write_file(script, text);
  run_gnuplot(script);
  return files;
}

const std::vector<std::string>& sweep_methods() {
  static const std::vector<std::string> methods = {"base", "fusion-reuse", "fusion-recompute", "greedy", "occam"};
  return methods;
}

}  // namespace

std::vector<CapacityPoint> capacity_sweep(std::span<const Graph> graphs, const Hardware& hw,
                                          const Accounting& accounting, std::span<const int64_t> capacities,
                                          const Progress& progress) {
  std::vector<CapacityPoint> points;
  const int total = static_cast<int>(graphs.size() * capacities.size());
  int done = 0;
  for (const Graph& graph : graphs) {
    for (int64_t capacity : capacities) {
      Hardware sized = hw;
      sized.sram_bytes = capacity;
      sized.chips = 1 << 20;  // the sweep is about traffic: give every plan the chips it needs
      CapacityPoint point{graph.name, capacity, {}};
      try {
        const Evaluation e = evaluate_model(graph, sized, accounting);
        for (const std::string& method : sweep_methods()) point.offchip_bytes.emplace_back(method, e.method(method).offchip_bytes);
      } catch (const Error&) {
        // No plan exists at this capacity (an op's line buffers alone do not fit): the point is
        // left out of the curves rather than drawn at an invented value.
      }
      points.push_back(std::move(point));
      if (progress) progress(++done, total);
    }
  }
  return points;
}

std::vector<fs::path> plot_capacity_sweep(const fs::path& dir, std::span<const CapacityPoint> points) {
  std::vector<std::string> models;
  for (const CapacityPoint& p : points) {
    if (std::find(models.begin(), models.end(), p.model) == models.end()) models.push_back(p.model);
  }
  if (models.empty()) fail("capacity plot: no data points");
  // One gnuplot data block per model (separated by two blank lines, selected with `index`).
  std::string data = "# capacity_KiB";
  for (const std::string& m : sweep_methods()) data += " " + m + "_MiB";
  data += "\n";
  for (size_t i = 0; i < models.size(); ++i) {
    if (i > 0) data += "\n\n";
    data += "# " + models[i] + "\n";
    for (const CapacityPoint& p : points) {
      if (p.model != models[i]) continue;
      data += fmt::format("{:g}", static_cast<double>(p.capacity_bytes) / 1024.0);
      for (const std::string& m : sweep_methods()) {
        const auto it = std::find_if(p.offchip_bytes.begin(), p.offchip_bytes.end(), [&](const auto& v) { return v.first == m; });
        data += it == p.offchip_bytes.end() ? std::string(" NaN") : fmt::format(" {:.6g}", it->second / (1024.0 * 1024.0));
      }
      data += "\n";
    }
  }
  const size_t columns = std::min<size_t>(3, models.size());
  const size_t rows = (models.size() + columns - 1) / columns;
  std::string body = fmt::format(
      "set multiplot layout {},{} title 'Off-chip traffic per image vs on-chip capacity per chip'\n"
      "set logscale xy 2\nset format x '%g'\nset xlabel 'on-chip KiB per chip'\nset ylabel 'MiB per image'\n"
      "set key bottom left font ',8'\nset grid\n",
      rows, columns);
  for (size_t i = 0; i < models.size(); ++i) {
    body += fmt::format("set title '{}'\nplot", models[i]);
    for (size_t m = 0; m < sweep_methods().size(); ++m) {
      body += fmt::format("{} data index {} using 1:{} with linespoints title '{}'", m == 0 ? "" : ",", i, m + 2,
                          sweep_methods()[m]);
    }
    body += "\n";
  }
  body += "unset multiplot";
  return draw(dir, "traffic_vs_capacity", data, fmt::format("{},{}", 500 * columns, 380 * rows), body);
}

std::vector<fs::path> plot_pipeline_gantt(const fs::path& dir, const Evaluation& evaluation, int64_t batches) {
  const MethodResult& stap = evaluation.method("occam+stap");
  std::vector<double> times;
  for (const StageTime& t : stap.times) times.push_back(t.time_s);
  const SimResult sim = simulate_pipeline(times, stap.replicas, {batches, 2, true});
  // One row per chip, stage by stage, replicas of a stage adjacent.
  std::vector<int> first_row(stap.replicas.size(), 0);
  int chips = 0;
  std::string ytics;
  for (size_t s = 0; s < stap.replicas.size(); ++s) {
    first_row[s] = chips;
    for (int r = 0; r < stap.replicas[s]; ++r) {
      ytics += fmt::format("{}'stage {} r{}' {}", ytics.empty() ? "" : ", ", s, r, chips);
      ++chips;
    }
  }
  std::string data = "# chip start_ms end_ms batch\n";
  for (const BusyInterval& busy : sim.trace) {
    data += fmt::format("{} {:.9g} {:.9g} {}\n", first_row[static_cast<size_t>(busy.stage)] + busy.replica,
                        busy.start_s * 1e3, busy.end_s * 1e3, busy.batch);
  }
  const std::string body = fmt::format(
      "set title '{} on {}: Occam pipeline with STAP, {} mini-batches of {} (colour = mini-batch)'\n"
      "set xlabel 'time (ms)'\nset yrange [{}:-1]\nset ytics ({}) font ',8'\nset grid x\nunset key\n"
      "plot data using (($2+$3)/2):1:(($3-$2)/2):(0.4):(int($4)%8+1) with boxxyerror fs solid 0.7 border lc "
      "'black' lc variable",
      evaluation.model, evaluation.hardware.name, batches, evaluation.accounting.batch, chips, ytics);
  return draw(dir, "pipeline_gantt_" + evaluation.model, data, fmt::format("1100,{}", 160 + 22 * chips), body);
}

std::vector<fs::path> plot_stage_times(const fs::path& dir, const Evaluation& evaluation) {
  const MethodResult& stap = evaluation.method("occam+stap");
  std::string data = "# stage replicas time_ms effective_ms\n";
  for (size_t s = 0; s < stap.times.size(); ++s) {
    data += fmt::format("{} {} {:.9g} {:.9g}\n", s, stap.replicas[s], stap.times[s].time_s * 1e3,
                        stap.times[s].time_s * 1e3 / stap.replicas[s]);
  }
  const std::string body = fmt::format(
      "set title '{} on {}: stage times per mini-batch before and after STAP ({} chips)'\n"
      "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
      "set ylabel 'ms per mini-batch'\nset xlabel 'stage (replicas after STAP)'\nset grid y\nset key top right\n"
      "plot data using 3:xtic(sprintf('%d (x%d)', $1, $2)) title 'stage time t', '' using 4 title 'after STAP: t / "
      "replicas'",
      evaluation.model, evaluation.hardware.name, stap.chips);
  return draw(dir, "stage_times_" + evaluation.model, data, fmt::format("{},420", std::max<size_t>(700, 60 * stap.times.size() + 200)), body);
}

}  // namespace occam
