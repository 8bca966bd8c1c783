#include "common/gzip.h"

#include <zlib.h>

#include <array>

namespace intgrads {

namespace {
constexpr int kGzipWindowBits = 15 + 16;  // 16: a gzip header instead of zlib's
}

StatusOr<std::string> GzipCompress(std::string_view data, int level) {
  if (level < 0 || level > 9) return InvalidError("gzip level must be 0..9");
  z_stream stream{};
  if (deflateInit2(&stream, level, Z_DEFLATED, kGzipWindowBits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return InternalError("deflateInit2 failed");
  }
  std::string out;
  out.resize(deflateBound(&stream, data.size()));
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&stream, Z_FINISH);
  const size_t written = stream.total_out;
  deflateEnd(&stream);
  if (rc != Z_STREAM_END) return InternalError("deflate did not finish");
  out.resize(written);
  return out;
}

StatusOr<std::string> GzipDecompress(std::string_view data, size_t max_output) {
  z_stream stream{};
  if (inflateInit2(&stream, kGzipWindowBits) != Z_OK) return InternalError("inflateInit2 failed");
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  std::string out;
  std::array<char, 1 << 16> chunk{};
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(chunk.data());
    stream.avail_out = static_cast<uInt>(chunk.size());
    rc = inflate(&stream, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&stream);
      return DataLossError("not a valid gzip stream");
    }
    out.append(chunk.data(), chunk.size() - stream.avail_out);
    if (out.size() > max_output) {
      inflateEnd(&stream);
      return TooLargeError("gzip stream inflates past " + std::to_string(max_output) + " bytes");
    }
    if (rc == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      return DataLossError("gzip stream is truncated");
    }
  }
  inflateEnd(&stream);
  return out;
}

}  // namespace intgrads
