// Network inputs: seeded random tensors, and PNG/JPEG files written here with libpng/libjpeg.
#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>

namespace occam {
namespace {

std::filesystem::path scratch(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "occam_exec_image_test";
  std::filesystem::create_directories(dir);
  return dir / name;
}

void write_png(const std::filesystem::path& path, const Image& image) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = image.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  ASSERT_NE(png_image_write_to_file(&png, path.c_str(), 0, image.pixels.data(), 0, nullptr), 0) << png.message;
}

void write_jpeg(const std::filesystem::path& path, const Image& image, int quality) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  jpeg_compress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  jpeg_stdio_dest(&info, file);
  info.image_width = static_cast<JDIMENSION>(image.width);
  info.image_height = static_cast<JDIMENSION>(image.height);
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  std::vector<uint8_t> row_pixels = image.pixels;
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = row_pixels.data() + static_cast<size_t>(info.next_scanline) * static_cast<size_t>(image.width) * 3;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(file);
}

Image gradient(int64_t h, int64_t w) {
  Image image{h, w, 3, {}};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      image.pixels.push_back(static_cast<uint8_t>(x * 255 / std::max<int64_t>(1, w - 1)));
      image.pixels.push_back(static_cast<uint8_t>(y * 255 / std::max<int64_t>(1, h - 1)));
      image.pixels.push_back(128);
    }
  return image;
}

void expect_error_naming(const std::function<void()>& action, const std::string& expected) {
  try {
    action();
    FAIL() << "expected an error containing \"" << expected << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

TEST(RandomInput, IsSeededAndInRange) {
  const HostTensor a = random_input({1, 3, 8, 8});
  const HostTensor b = random_input({1, 3, 8, 8});
  const HostTensor c = random_input({1, 3, 8, 8}, 1);
  EXPECT_EQ(a.values, b.values);
  EXPECT_NE(a.values, c.values);
  for (float v : a.values) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
  }
  // The documented generator: mt19937_64(seed), top 53 bits scaled to [-1, 1).
  std::mt19937_64 engine(kInputSeed);
  EXPECT_EQ(a.values[0], static_cast<float>(static_cast<double>(engine() >> 11) * 0x1.0p-52 - 1.0));
}

TEST(Image, PngRoundTripIsExact) {
  const Image image = gradient(5, 7);
  const auto path = scratch("gradient.png");
  write_png(path, image);
  const Image read = read_image(path);
  EXPECT_EQ(read.height, 5);
  EXPECT_EQ(read.width, 7);
  EXPECT_EQ(read.channels, 3);
  EXPECT_EQ(read.pixels, image.pixels);
}

TEST(Image, GrayPngComesOutAsRgb) {
  const Image gray{2, 2, 1, {0, 85, 170, 255}};
  const auto path = scratch("gray.png");
  write_png(path, gray);
  const Image read = read_image(path);
  ASSERT_EQ(read.pixels.size(), 12u);
  // libpng's simplified API converts sRGB gray to RGB exactly for 8-bit values.
  EXPECT_EQ(read.pixels[3], 85);
  EXPECT_EQ(read.pixels[4], 85);
  EXPECT_EQ(read.pixels[5], 85);
}

TEST(Image, JpegDecodesCloseToTheOriginal) {
  const Image image = gradient(16, 24);
  const auto path = scratch("gradient.jpg");
  write_jpeg(path, image, 95);
  const Image read = read_image(path);
  ASSERT_EQ(read.height, 16);
  ASSERT_EQ(read.width, 24);
  int worst = 0;
  for (size_t i = 0; i < image.pixels.size(); ++i) worst = std::max(worst, std::abs(image.pixels[i] - read.pixels[i]));
  EXPECT_LE(worst, 12);
}

TEST(ImageInput, NormalisesWithImageNetStatistics) {
  const Image flat{1, 1, 3, {255, 0, 128}};
  const HostTensor input = image_input(flat, {2, 3, 3, 2});
  ASSERT_EQ(input.values.size(), 36u);
  // A constant image stays constant through bilinear resizing.
  EXPECT_NEAR(input.values[0], (1.0f - 0.485f) / 0.229f, 1e-5);
  EXPECT_NEAR(input.values[6], (0.0f - 0.456f) / 0.224f, 1e-5);
  EXPECT_NEAR(input.values[12], (128.0f / 255.0f - 0.406f) / 0.225f, 1e-5);
  // Every image of the batch is the same.
  EXPECT_TRUE(std::equal(input.values.begin(), input.values.begin() + 18, input.values.begin() + 18));
}

TEST(ImageInput, GrayscaleForOneChannelNets) {
  const Image flat{1, 1, 3, {255, 0, 0}};
  const HostTensor input = image_input(flat, {1, 1, 2, 2});
  for (float v : input.values) EXPECT_NEAR(v, 0.299f, 1e-6);
}

TEST(ImageInput, BilinearResizeUsesHalfPixelCentres) {
  // One row 0, 255 upscaled to four columns: sample positions -0.25, 0.25, 0.75, 1.25 -> clamped.
  const Image row{1, 2, 1, {0, 255}};
  const HostTensor input = image_input(row, {1, 1, 1, 4});
  EXPECT_NEAR(input.values[0], 0.0f, 1e-6);
  EXPECT_NEAR(input.values[1], 0.25f, 1e-6);
  EXPECT_NEAR(input.values[2], 0.75f, 1e-6);
  EXPECT_NEAR(input.values[3], 1.0f, 1e-6);
}

TEST(ImageInput, LoadImageResizesAFile) {
  const auto path = scratch("load.png");
  write_png(path, gradient(10, 20));
  const HostTensor input = load_image(path, {1, 3, 4, 4});
  EXPECT_EQ(input.shape, (Shape{1, 3, 4, 4}));
  // Red grows left to right.
  EXPECT_LT(input.values[0], input.values[3]);
}

TEST(ImageErrors, NameTheFile) {
  const auto missing = scratch("missing.png");
  std::filesystem::remove(missing);
  expect_error_naming([&] { read_image(missing); }, missing.string());

  const auto text = scratch("notes.png");
  std::ofstream(text) << "not an image at all";
  expect_error_naming([&] { read_image(text); }, "not a PNG or JPEG");

  // Valid signatures, truncated bodies.
  const auto png = scratch("truncated.png");
  write_png(png, gradient(32, 32));
  std::filesystem::resize_file(png, 60);
  expect_error_naming([&] { read_image(png); }, png.string());

  const auto jpeg = scratch("truncated.jpg");
  write_jpeg(jpeg, gradient(64, 64), 90);
  std::filesystem::resize_file(jpeg, std::filesystem::file_size(jpeg) / 2);
  expect_error_naming([&] { read_image(jpeg); }, "corrupt JPEG");

  expect_error_naming([&] { image_input(gradient(4, 4), {1, 4, 8, 8}); }, "input channels, not 4");
}

}  // namespace
}  // namespace occam
