// Images as the service sees them: 8-bit pixels, rows of columns of channels
// (H x W x C, C = 1 grey, 3 RGB, 4 RGBA), and the preprocessing of
// compat.md: to RGB, Pillow-exact bilinear resize to the model's input size,
// scale to [0, 1], normalize per channel, channels first.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace intgrads {

struct Image {
  int height = 0;
  int width = 0;
  int channels = 3;
  std::vector<uint8_t> pixels;  // height * width * channels, row-major HWC

  uint8_t at(int y, int x, int c) const { return pixels[(static_cast<size_t>(y) * width + x) * channels + c]; }
};

struct Normalization {
  std::array<float, 3> mean{};
  std::array<float, 3> std{};
};

// Grey is replicated to three channels, alpha is dropped.
Image ToRgb(const Image& image);

// Pillow's Image.resize(size, Image.BILINEAR) on 8-bit images, to the pixel:
// an antialiasing triangle filter widened by the scale factor when shrinking,
// fixed-point coefficients, horizontal pass then vertical, with rounding to
// uint8 between the passes.
Image ResizeBilinear(const Image& image, int out_width, int out_height);

// RGB image -> 3 x H x W floats, (pixel / 255 - mean) / std.
std::vector<float> NormalizeChw(const Image& rgb, const Normalization& norm);
// Its inverse, to the nearest pixel value and clamped to 0..255: the picture
// of a normalized input (a client's tensor, drawn under a heatmap).
Image DenormalizeChw(const float* chw, int height, int width, const Normalization& norm);

// What a decoder may be asked to produce; checked from the image header
// before any pixel is decoded (a decompression bomb costs nothing).
struct ImageLimits {
  int max_side = 1 << 16;
  int64_t max_pixels = int64_t{1} << 30;
};

// PNG and JPEG decoding (libpng, libjpeg) to 8-bit RGB, RGBA or grey. An
// image over `limits` is kTooLarge, naming the limit.
StatusOr<Image> DecodeImage(std::string_view bytes, const ImageLimits& limits = {});

// What a PNG's or JPEG's header says, read without decoding a pixel.
struct ImageHeader {
  int width = 0;
  int height = 0;
  int channels = 0;           // of the decoded image (DecodeImage)
  uint64_t decode_bytes = 0;  // what decoding it holds at most: its pixels, and a progressive JPEG's coefficients
};
// The header of an image DecodeImage reads, with the same checks of its
// format and of `limits`; the rest of the file is not looked at.
StatusOr<ImageHeader> ReadImageHeader(std::string_view bytes, const ImageLimits& limits = {});
StatusOr<Image> ReadImageFile(const std::string& path);
// Whether a file name ends in .png, .jpg or .jpeg, in any case: the files a
// folder or a zip of images is read for.
bool HasImageExtension(std::string_view name);

// An 8-bit PNG of `image` (1, 3 or 4 channels).
StatusOr<std::string> EncodePng(const Image& image);

}  // namespace intgrads
