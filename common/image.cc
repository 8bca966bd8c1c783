#include "common/image.h"

#include "common/file.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstring>

namespace intgrads {

Image ToRgb(const Image& image) {
  if (image.channels == 3) return image;
  Image rgb;
  rgb.height = image.height;
  rgb.width = image.width;
  rgb.channels = 3;
  const size_t count = static_cast<size_t>(image.height) * image.width;
  rgb.pixels.resize(count * 3);
  for (size_t i = 0; i < count; ++i) {
    for (int c = 0; c < 3; ++c) {
      rgb.pixels[i * 3 + c] = image.pixels[i * image.channels + (image.channels == 1 ? 0 : c)];
    }
  }
  return rgb;
}

namespace {

// Pillow's fixed point: 32 bits minus 8 for the pixel, minus 2 for headroom.
constexpr int kPrecisionBits = 32 - 8 - 2;

// One output pixel of a pass: input[first .. first + weights.size()) times weights.
struct Taps {
  int first = 0;
  std::vector<int32_t> weights;
};

std::vector<Taps> BilinearTaps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;  // the triangle filter's support is 1
  std::vector<Taps> taps(static_cast<size_t>(out_size));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    // Pillow rounds by truncating x + 0.5 (both are >= 0 here): the same, not lround.
    int xmin = static_cast<int>(center - support + 0.5);  // NOLINT(bugprone-incorrect-roundings)
    xmin = std::max(xmin, 0);
    int xmax = static_cast<int>(center + support + 0.5);  // NOLINT(bugprone-incorrect-roundings)
    xmax = std::min(xmax, in_size) - xmin;
    std::vector<double> k(static_cast<size_t>(std::max(xmax, 0)));
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double d = std::fabs((x + xmin - center + 0.5) / filter_scale);
      k[x] = d < 1.0 ? 1.0 - d : 0.0;
      total += k[x];
    }
    Taps& t = taps[xx];
    t.first = xmin;
    for (double w : k) {
      const double normalized = total != 0.0 ? w / total : w;
      const double fixed = normalized * (1 << kPrecisionBits);
      t.weights.push_back(static_cast<int32_t>(fixed < 0 ? -0.5 + fixed : 0.5 + fixed));
    }
  }
  return taps;
}

uint8_t Clip8(int64_t in) {
  if (in >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (in <= 0) return 0;
  return static_cast<uint8_t>(in >> kPrecisionBits);
}

}  // namespace

Image ResizeBilinear(const Image& image, int out_width, int out_height) {
  Image current = image;
  if (out_width != image.width) {
    const std::vector<Taps> taps = BilinearTaps(image.width, out_width);
    Image next;
    next.height = current.height;
    next.width = out_width;
    next.channels = current.channels;
    next.pixels.resize(static_cast<size_t>(next.height) * next.width * next.channels);
    for (int y = 0; y < next.height; ++y) {
      for (int x = 0; x < out_width; ++x) {
        const Taps& t = taps[x];
        for (int c = 0; c < current.channels; ++c) {
          int64_t sum = 1 << (kPrecisionBits - 1);
          for (size_t i = 0; i < t.weights.size(); ++i) {
            sum += static_cast<int64_t>(current.at(y, t.first + static_cast<int>(i), c)) * t.weights[i];
          }
          next.pixels[(static_cast<size_t>(y) * out_width + x) * next.channels + c] = Clip8(sum);
        }
      }
    }
    current = std::move(next);
  }
  if (out_height != image.height) {
    const std::vector<Taps> taps = BilinearTaps(image.height, out_height);
    Image next;
    next.height = out_height;
    next.width = current.width;
    next.channels = current.channels;
    next.pixels.resize(static_cast<size_t>(next.height) * next.width * next.channels);
    for (int y = 0; y < out_height; ++y) {
      const Taps& t = taps[y];
      for (int x = 0; x < next.width; ++x) {
        for (int c = 0; c < current.channels; ++c) {
          int64_t sum = 1 << (kPrecisionBits - 1);
          for (size_t i = 0; i < t.weights.size(); ++i) {
            sum += static_cast<int64_t>(current.at(t.first + static_cast<int>(i), x, c)) * t.weights[i];
          }
          next.pixels[(static_cast<size_t>(y) * next.width + x) * next.channels + c] = Clip8(sum);
        }
      }
    }
    current = std::move(next);
  }
  return current;
}

std::vector<float> NormalizeChw(const Image& rgb, const Normalization& norm) {
  const size_t plane = static_cast<size_t>(rgb.height) * rgb.width;
  std::vector<float> out(plane * 3);
  for (int c = 0; c < 3; ++c) {
    for (size_t i = 0; i < plane; ++i) {
      // As torchvision: ToTensor divides by 255, Normalize subtracts and divides in float32.
      const float unit = static_cast<float>(rgb.pixels[i * 3 + c]) / 255.0F;
      out[c * plane + i] = (unit - norm.mean[c]) / norm.std[c];
    }
  }
  return out;
}

Image DenormalizeChw(const float* chw, int height, int width, const Normalization& norm) {
  Image rgb{height, width, 3, {}};
  const size_t plane = static_cast<size_t>(height) * width;
  rgb.pixels.resize(plane * 3);
  for (int c = 0; c < 3; ++c) {
    for (size_t i = 0; i < plane; ++i) {
      const double unit = static_cast<double>(chw[c * plane + i]) * norm.std[c] + norm.mean[c];
      const double value = std::isfinite(unit) ? std::clamp(std::round(unit * 255.0), 0.0, 255.0) : 0.0;
      rgb.pixels[i * 3 + c] = static_cast<uint8_t>(value);
    }
  }
  return rgb;
}

namespace {

Status CheckSize(int64_t width, int64_t height, const ImageLimits& limits) {
  if (width <= 0 || height <= 0) return InvalidError("image: it has no pixels");
  if (width > limits.max_side || height > limits.max_side) {
    return TooLargeError("image: " + std::to_string(width) + " x " + std::to_string(height) +
                         " has a side over the limit of " + std::to_string(limits.max_side) +
                         " pixels (raise with --max-image-side)");
  }
  if (width * height > limits.max_pixels) {
    return TooLargeError("image: " + std::to_string(width) + " x " + std::to_string(height) + " is over the limit of " +
                         std::to_string(limits.max_pixels) + " pixels (raise with --max-pixels)");
  }
  return Status::Ok();
}

// Opens a PNG and chooses the format it is decoded to: RGB or RGBA for
// colour, grey, RGBA for grey with alpha. The caller frees `png`.
Status BeginPng(std::string_view bytes, const ImageLimits& limits, png_image* png) {
  *png = png_image{};
  png->version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(png, bytes.data(), bytes.size())) {
    return InvalidError(std::string("not a readable PNG: ") + png->message);
  }
  RETURN_IF_ERROR(CheckSize(png->width, png->height, limits));
  const bool has_alpha = (png->format & PNG_FORMAT_FLAG_ALPHA) != 0;
  const bool has_colour = (png->format & PNG_FORMAT_FLAG_COLOR) != 0;
  png->format =
      has_colour ? (has_alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) : (has_alpha ? PNG_FORMAT_GA : PNG_FORMAT_GRAY);
  if (png->format == PNG_FORMAT_GA) png->format = PNG_FORMAT_RGBA;
  return Status::Ok();
}

StatusOr<Image> DecodePng(std::string_view bytes, const ImageLimits& limits) {
  png_image png;
  if (Status begun = BeginPng(bytes, limits, &png); !begun.ok()) {
    png_image_free(&png);
    return begun;
  }
  Image image;
  image.width = static_cast<int>(png.width);
  image.height = static_cast<int>(png.height);
  image.channels = static_cast<int>(PNG_IMAGE_SAMPLE_CHANNELS(png.format));
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    png_image_free(&png);
    return InvalidError(std::string("corrupt PNG: ") + png.message);
  }
  return image;
}

struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void OnJpegError(j_common_ptr info) {
  auto* error = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, error->message);
  std::longjmp(error->jump, 1);
}

// libjpeg only warns about truncated or corrupt data and fills in grey;
// like Pillow, we refuse such an image instead.
void OnJpegMessage(j_common_ptr info, int level) {
  if (level < 0) OnJpegError(info);
}

StatusOr<ImageHeader> PngHeader(std::string_view bytes, const ImageLimits& limits) {
  png_image png;
  const Status begun = BeginPng(bytes, limits, &png);
  ImageHeader header;
  if (begun.ok()) {
    header.width = static_cast<int>(png.width);
    header.height = static_cast<int>(png.height);
    header.channels = static_cast<int>(PNG_IMAGE_SAMPLE_CHANNELS(png.format));
    header.decode_bytes = PNG_IMAGE_SIZE(png);
  }
  png_image_free(&png);
  if (!begun.ok()) return begun;
  return header;
}

// A JPEG's header, and with `image` its pixels too.
Status ReadJpeg(std::string_view bytes, const ImageLimits& limits, ImageHeader* header, Image* image) {
  jpeg_decompress_struct info{};
  JpegError error{};
  info.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = OnJpegError;
  error.manager.emit_message = OnJpegMessage;
  if (setjmp(error.jump)) {  // NOLINT(cert-err52-cpp): libjpeg reports errors by longjmp
    jpeg_destroy_decompress(&info);
    return InvalidError(std::string("corrupt JPEG: ") + error.message);
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  if (Status size = CheckSize(info.image_width, info.image_height, limits); !size.ok()) {
    jpeg_destroy_decompress(&info);
    return size;
  }
  header->width = static_cast<int>(info.image_width);
  header->height = static_cast<int>(info.image_height);
  header->channels = info.num_components == 1 ? 1 : 3;
  const uint64_t pixels = static_cast<uint64_t>(header->width) * static_cast<uint64_t>(header->height);
  header->decode_bytes = pixels * static_cast<uint64_t>(header->channels);
  // A progressive (or multi-scan) JPEG is decoded from a buffer of every
  // component's coefficients, two bytes each.
  if (jpeg_has_multiple_scans(&info)) header->decode_bytes += pixels * static_cast<uint64_t>(info.num_components) * 2;
  if (image != nullptr) {
    info.out_color_space = info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&info);
    image->width = static_cast<int>(info.output_width);
    image->height = static_cast<int>(info.output_height);
    image->channels = static_cast<int>(info.output_components);
    image->pixels.resize(static_cast<size_t>(image->width) * image->height * image->channels);
    while (info.output_scanline < info.output_height) {
      unsigned char* row =
          image->pixels.data() + static_cast<size_t>(info.output_scanline) * image->width * image->channels;
      jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
  }
  jpeg_destroy_decompress(&info);
  return Status::Ok();
}

StatusOr<ImageHeader> JpegHeader(std::string_view bytes, const ImageLimits& limits) {
  ImageHeader header;
  RETURN_IF_ERROR(ReadJpeg(bytes, limits, &header, nullptr));
  return header;
}

StatusOr<Image> DecodeJpeg(std::string_view bytes, const ImageLimits& limits) {
  ImageHeader header;
  Image image;
  RETURN_IF_ERROR(ReadJpeg(bytes, limits, &header, &image));
  return image;
}

}  // namespace

StatusOr<Image> DecodeImage(std::string_view bytes, const ImageLimits& limits) {
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0) return DecodePng(bytes, limits);
  if (bytes.size() >= 3 && std::memcmp(bytes.data(), "\xff\xd8\xff", 3) == 0) return DecodeJpeg(bytes, limits);
  return InvalidError("unsupported image format (PNG and JPEG are read)");
}

StatusOr<ImageHeader> ReadImageHeader(std::string_view bytes, const ImageLimits& limits) {
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0) return PngHeader(bytes, limits);
  if (bytes.size() >= 3 && std::memcmp(bytes.data(), "\xff\xd8\xff", 3) == 0) return JpegHeader(bytes, limits);
  return InvalidError("unsupported image format (PNG and JPEG are read)");
}

StatusOr<Image> ReadImageFile(const std::string& path) {
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) return Status(bytes.status().code(), "image: " + bytes.status().message());
  auto image = DecodeImage(*bytes);
  if (!image.ok()) return Status(image.status().code(), path + ": " + image.status().message());
  return image;
}

bool HasImageExtension(std::string_view name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || name.find('/', dot) != std::string_view::npos) return false;
  std::string ext(name.substr(dot));
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

StatusOr<std::string> EncodePng(const Image& image) {
  if (image.channels != 1 && image.channels != 3 && image.channels != 4) {
    return InvalidError("png: " + std::to_string(image.channels) + " channels");
  }
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = image.channels == 1 ? PNG_FORMAT_GRAY : image.channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
  png_alloc_size_t size = 0;
  if (!png_image_write_get_memory_size(png, size, 0, image.pixels.data(), 0, nullptr)) {
    return InvalidError(std::string("png: ") + png.message);
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, image.pixels.data(), 0, nullptr)) {
    return InvalidError(std::string("png: ") + png.message);
  }
  out.resize(size);
  return out;
}

}  // namespace intgrads
