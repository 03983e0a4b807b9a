// occam's one error type. Every user-facing failure (bad file, unsupported operator, shape
// mismatch, impossible capacity, malformed hardware description) is thrown as an occam::Error
// whose message already names the culprit; the CLI prints it on one line and exits non-zero.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace occam {

class Error : public std::runtime_error {
public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace occam
