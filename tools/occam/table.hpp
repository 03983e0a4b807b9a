// Plain-text tables for the terminal: columns sized to their widest cell, numbers right-aligned.
#pragma once

#include <fmt/core.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace occam::cli {

class Table {
public:
  // The first `text_columns` columns hold names and are left-aligned; the rest hold figures.
  explicit Table(std::vector<std::string> header, size_t text_columns = 1)
      : header_(std::move(header)), text_columns_(text_columns) {}

  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void separator() { rows_.emplace_back(); }

  void print(std::FILE* out = stdout) const {
    std::vector<size_t> width(header_.size(), 0);
    for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
    for (const auto& row : rows_) {
      for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
    }
    const auto line = [&](const std::vector<std::string>& row) {
      std::string text;
      for (size_t c = 0; c < width.size(); ++c) {
        const std::string& cell = c < row.size() ? row[c] : std::string();
        const std::string_view gap = c == 0 ? "" : "  ";
        text += c < text_columns_ ? fmt::format("{}{:<{}}", gap, cell, width[c]) : fmt::format("{}{:>{}}", gap, cell, width[c]);
      }
      while (!text.empty() && text.back() == ' ') text.pop_back();
      fmt::print(out, "{}\n", text);
    };
    line(header_);
    size_t total = 0;
    for (size_t w : width) total += w + 2;
    const std::string rule(total - 2, '-');
    fmt::print(out, "{}\n", rule);
    for (const auto& row : rows_) {
      if (row.empty()) {
        fmt::print(out, "{}\n", rule);
      } else {
        line(row);
      }
    }
  }

private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
  size_t text_columns_;
};

}  // namespace occam::cli
