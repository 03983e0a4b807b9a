#include "occam/error.hpp"
#include "occam/model.hpp"
namespace occam {
Graph import_onnx(const std::filesystem::path& path, const ModelOptions&) { fail("{}: TODO", path.string()); }
}
