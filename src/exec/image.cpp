// Network inputs: seeded random tensors and decoded images (PNG through libpng's simplified API,
// JPEG through libjpeg), resized and normalised the way torchvision's ImageNet models expect.
#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

namespace occam {

HostTensor random_input(const Shape& shape, uint64_t seed) {
  HostTensor tensor(shape);
  std::mt19937_64 engine(seed);
  // Our own float conversion (not std::uniform_real_distribution) so that every standard library
  // produces the same values.
  for (float& v : tensor.values) v = static_cast<float>(static_cast<double>(engine() >> 11) * 0x1.0p-52 - 1.0);
  return tensor;
}

namespace {

enum class ImageFormat { Png, Jpeg, Unknown };

ImageFormat sniff(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail("{}: cannot open image file", path.string());
  std::array<unsigned char, 8> head{};
  file.read(reinterpret_cast<char*>(head.data()), head.size());
  const auto got = static_cast<size_t>(file.gcount());
  if (got >= 8 && png_sig_cmp(head.data(), 0, 8) == 0) return ImageFormat::Png;
  if (got >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return ImageFormat::Jpeg;
  return ImageFormat::Unknown;
}

Image read_png(const std::filesystem::path& path) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (png_image_begin_read_from_file(&png, path.c_str()) == 0) {
    fail("{}: cannot read PNG: {}", path.string(), png.message);
  }
  // Gray, palette, 16-bit and alpha images all come out as 8-bit RGB; alpha is composed onto black.
  png.format = PNG_FORMAT_RGB;
  Image image;
  image.height = png.height;
  image.width = png.width;
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr) == 0) {
    const std::string message = png.message;
    png_image_free(&png);
    fail("{}: corrupt PNG: {}", path.string(), message);
  }
  return image;
}

// libjpeg reports fatal errors through error_exit, which must not return; we jump back to the
// decoding function with the message (C++ exceptions must not cross libjpeg's C frames).
struct JpegErrors {
  jpeg_error_mgr manager;
  std::jmp_buf escape;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_escape(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->escape, 1);
}

// Warnings (e.g. "premature end of data") leave a partly grey image behind; treat them as errors.
void jpeg_warning(j_common_ptr info, int level) {
  if (level < 0) jpeg_escape(info);
}

// Decodes into `pixels` (resized here); returns false with errors.message set on failure. No C++
// object with a destructor is created between setjmp and a possible longjmp.
bool decode_jpeg(std::FILE* file, Image& image, JpegErrors& errors) {
  jpeg_decompress_struct info;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_escape;
  errors.manager.emit_message = jpeg_warning;
  if (setjmp(errors.escape) != 0) {
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  image.height = info.output_height;
  image.width = info.output_width;
  image.pixels.resize(static_cast<size_t>(image.height * image.width * 3));
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = image.pixels.data() + static_cast<size_t>(info.output_scanline) * info.output_width * 3;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}

Image read_jpeg(const std::filesystem::path& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) fail("{}: cannot open image file", path.string());
  Image image;
  JpegErrors errors{};
  const bool ok = decode_jpeg(file, image, errors);
  std::fclose(file);
  if (!ok) fail("{}: corrupt JPEG: {}", path.string(), errors.message);
  return image;
}

}  // namespace

Image read_image(const std::filesystem::path& path) {
  switch (sniff(path)) {
    case ImageFormat::Png: return read_png(path);
    case ImageFormat::Jpeg: return read_jpeg(path);
    case ImageFormat::Unknown: break;
  }
  fail("{}: not a PNG or JPEG image", path.string());
}

namespace {

// Source sample positions of bilinear resizing along one axis (half-pixel centres, clamped at the
// border as PyTorch's interpolate with align_corners=False).
struct Tap {
  size_t lo = 0, hi = 0;
  float frac = 0;
};

std::vector<Tap> bilinear_taps(int64_t in, int64_t out) {
  std::vector<Tap> taps;
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t o = 0; o < out; ++o) {
    const double src = std::max(0.0, (static_cast<double>(o) + 0.5) * scale - 0.5);
    const auto lo = std::min(static_cast<int64_t>(src), in - 1);
    taps.push_back({static_cast<size_t>(lo), static_cast<size_t>(std::min(lo + 1, in - 1)),
                    static_cast<float>(src - static_cast<double>(lo))});
  }
  return taps;
}

}  // namespace

HostTensor image_input(const Image& image, const Shape& shape) {
  if (shape.c != 1 && shape.c != 3) {
    fail("an image can feed a network with 1 (grayscale) or 3 (RGB) input channels, not {}", shape.c);
  }
  if (image.channels != 1 && image.channels != 3) fail("image with {} channels: expected 1 or 3", image.channels);
  if (image.height < 1 || image.width < 1 ||
      image.pixels.size() != static_cast<size_t>(image.height * image.width * image.channels)) {
    fail("image of {}x{}x{} holds {} pixel bytes", image.height, image.width, image.channels, image.pixels.size());
  }
  constexpr std::array<float, 3> kMean = {0.485f, 0.456f, 0.406f};
  constexpr std::array<float, 3> kStd = {0.229f, 0.224f, 0.225f};
  constexpr std::array<float, 3> kLuma = {0.299f, 0.587f, 0.114f};
  const std::vector<Tap> rows = bilinear_taps(image.height, shape.h);
  const std::vector<Tap> cols = bilinear_taps(image.width, shape.w);
  const auto width = static_cast<size_t>(image.width);
  const auto channels = static_cast<size_t>(image.channels);
  const auto pixel = [&](size_t y, size_t x, size_t c) {
    return static_cast<float>(image.pixels[(y * width + x) * channels + (channels == 1 ? 0 : c)]) * (1.0f / 255.0f);
  };
  HostTensor tensor(shape);
  const auto plane = static_cast<size_t>(shape.h * shape.w);
  for (size_t y = 0; y < rows.size(); ++y) {
    const Tap& r = rows[y];
    for (size_t x = 0; x < cols.size(); ++x) {
      const Tap& k = cols[x];
      std::array<float, 3> rgb{};
      for (size_t c = 0; c < 3; ++c) {
        const float top = pixel(r.lo, k.lo, c) * (1 - k.frac) + pixel(r.lo, k.hi, c) * k.frac;
        const float bottom = pixel(r.hi, k.lo, c) * (1 - k.frac) + pixel(r.hi, k.hi, c) * k.frac;
        rgb[c] = top * (1 - r.frac) + bottom * r.frac;
      }
      const size_t at = y * cols.size() + x;
      if (shape.c == 1) {
        tensor.values[at] = kLuma[0] * rgb[0] + kLuma[1] * rgb[1] + kLuma[2] * rgb[2];
      } else {
        for (size_t c = 0; c < 3; ++c) tensor.values[c * plane + at] = (rgb[c] - kMean[c]) / kStd[c];
      }
    }
  }
  const int64_t per_image = shape.image_elements();
  for (int64_t n = 1; n < shape.n; ++n) {
    std::copy_n(tensor.values.begin(), per_image, tensor.values.begin() + n * per_image);
  }
  return tensor;
}

HostTensor load_image(const std::filesystem::path& path, const Shape& shape) {
  return image_input(read_image(path), shape);
}

}  // namespace occam

namespace occam {

Image output_image(const HostTensor& output, int64_t batch_index) {
  const Shape& s = output.shape;
  if (batch_index < 0 || batch_index >= s.n) fail("image {} of a batch of {}: out of range", batch_index, s.n);
  Image image;
  image.height = s.h;
  image.width = s.w;
  image.channels = s.c == 3 ? 3 : 1;
  const float* first = output.values.data() + batch_index * s.image_elements();
  const int64_t plane = s.h * s.w;
  const auto [lo, hi] = std::minmax_element(first, first + image.channels * plane);
  const float range = *hi > *lo ? *hi - *lo : 1.0f;
  image.pixels.resize(static_cast<size_t>(image.channels * plane));
  for (int64_t p = 0; p < plane; ++p) {
    for (int c = 0; c < image.channels; ++c) {
      const float v = (first[c * plane + p] - *lo) / range;
      image.pixels[static_cast<size_t>(p * image.channels + c)] = static_cast<uint8_t>(std::lround(v * 255.0f));
    }
  }
  return image;
}

void write_png(const Image& image, const std::filesystem::path& path) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = image.channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  if (png_image_write_to_file(&png, path.c_str(), 0, image.pixels.data(), 0, nullptr) == 0) {
    fail("{}: cannot write PNG: {}", path.string(), png.message);
  }
}

}  // namespace occam
