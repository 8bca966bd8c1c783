#include "common/zip.h"

#include <zlib.h>

#include <cstring>

namespace intgrads {

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndOfCentralSig = 0x06054b50;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEndOfCentralSize = 22;
constexpr size_t kDataAlignment = 64;

uint16_t Read16(std::string_view b, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(b[at]) | (static_cast<uint8_t>(b[at + 1]) << 8));
}
uint32_t Read32(std::string_view b, size_t at) {
  return static_cast<uint32_t>(Read16(b, at)) | (static_cast<uint32_t>(Read16(b, at + 2)) << 16);
}
void Put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v & 0xffff));
  Put16(out, static_cast<uint16_t>(v >> 16));
}

}  // namespace

bool LooksLikeZip(std::string_view bytes) { return bytes.size() >= 4 && Read32(bytes, 0) == kLocalHeaderSig; }

StatusOr<std::vector<ZipEntry>> ReadZip(std::string_view archive) {
  if (archive.size() < kEndOfCentralSize) return DataLossError("zip: file too short (truncated?)");
  // The end-of-central-directory record sits in the last 22 + 65535 bytes.
  size_t eocd = std::string_view::npos;
  const size_t lowest = archive.size() > kEndOfCentralSize + 0xffff ? archive.size() - kEndOfCentralSize - 0xffff : 0;
  for (size_t at = archive.size() - kEndOfCentralSize + 1; at-- > lowest;) {
    if (Read32(archive, at) == kEndOfCentralSig) {
      eocd = at;
      break;
    }
  }
  if (eocd == std::string_view::npos) return DataLossError("zip: no end of central directory (truncated?)");
  const uint16_t count = Read16(archive, eocd + 10);
  const uint32_t dir_size = Read32(archive, eocd + 12);
  const uint32_t dir_offset = Read32(archive, eocd + 16);
  if (count == 0xffff || dir_offset == 0xffffffffU) {
    return UnimplementedError("zip: zip64 archives (over 4 GiB or 65535 entries) are not supported");
  }
  if (static_cast<uint64_t>(dir_offset) + dir_size > eocd) {
    return DataLossError("zip: central directory lies outside the file");
  }
  std::vector<ZipEntry> entries;
  entries.reserve(count);
  size_t at = dir_offset;
  for (uint16_t i = 0; i < count; ++i) {
    if (at + kCentralHeaderSize > eocd || Read32(archive, at) != kCentralHeaderSig) {
      return DataLossError("zip: bad central directory record " + std::to_string(i) + " at offset " +
                           std::to_string(at));
    }
    const uint16_t method = Read16(archive, at + 10);
    const uint32_t compressed = Read32(archive, at + 20);
    const uint32_t uncompressed = Read32(archive, at + 24);
    const uint16_t name_len = Read16(archive, at + 28);
    const uint16_t extra_len = Read16(archive, at + 30);
    const uint16_t comment_len = Read16(archive, at + 32);
    const uint32_t local_offset = Read32(archive, at + 42);
    if (at + kCentralHeaderSize + name_len > eocd) return DataLossError("zip: entry name past the directory");
    std::string name(archive.substr(at + kCentralHeaderSize, name_len));
    if (compressed == 0xffffffffU || local_offset == 0xffffffffU) {
      return UnimplementedError("zip: zip64 entry '" + name + "' is not supported");
    }
    if (method != 0 || compressed != uncompressed) {
      return UnimplementedError("zip: entry '" + name + "' is compressed (method " + std::to_string(method) +
                                "); only stored entries are read, as torch.save writes them (zip -0)");
    }
    if (static_cast<uint64_t>(local_offset) + kLocalHeaderSize > archive.size() ||
        Read32(archive, local_offset) != kLocalHeaderSig) {
      return DataLossError("zip: bad local header for '" + name + "' at offset " + std::to_string(local_offset));
    }
    const uint64_t data_at = static_cast<uint64_t>(local_offset) + kLocalHeaderSize +
                             Read16(archive, local_offset + 26) + Read16(archive, local_offset + 28);
    if (data_at + compressed > archive.size()) {
      return DataLossError("zip: data of '" + name + "' runs past the end of the file (truncated?)");
    }
    entries.push_back({std::move(name), archive.substr(data_at, compressed)});
    at += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
  return entries;
}

void ZipWriter::Add(const std::string& name, std::string_view data) {
  CentralRecord record;
  record.name = name;
  record.crc =
      static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
  record.size = static_cast<uint32_t>(data.size());
  record.offset = static_cast<uint32_t>(out_.size());
  // Pad through the extra field so that the data starts on a 64-byte boundary.
  const size_t header_end = out_.size() + kLocalHeaderSize + name.size();
  size_t padding = (kDataAlignment - (header_end + 4) % kDataAlignment) % kDataAlignment;
  const size_t extra_len = padding + 4;
  Put32(out_, kLocalHeaderSig);
  Put16(out_, 20);    // version needed
  Put16(out_, 0);     // flags
  Put16(out_, 0);     // stored
  Put16(out_, 0);     // time
  Put16(out_, 0x21);  // date: 1980-01-01
  Put32(out_, record.crc);
  Put32(out_, record.size);
  Put32(out_, record.size);
  Put16(out_, static_cast<uint16_t>(name.size()));
  Put16(out_, static_cast<uint16_t>(extra_len));
  out_ += name;
  Put16(out_, 0x4346);  // an unregistered extra-field id holding only padding
  Put16(out_, static_cast<uint16_t>(padding));
  out_.append(padding, 'Z');
  out_.append(data.data(), data.size());
  records_.push_back(std::move(record));
}

std::string ZipWriter::Finish() {
  const auto dir_offset = static_cast<uint32_t>(out_.size());
  for (const CentralRecord& r : records_) {
    Put32(out_, kCentralHeaderSig);
    Put16(out_, 20);  // made by
    Put16(out_, 20);  // version needed
    Put16(out_, 0);
    Put16(out_, 0);
    Put16(out_, 0);
    Put16(out_, 0x21);
    Put32(out_, r.crc);
    Put32(out_, r.size);
    Put32(out_, r.size);
    Put16(out_, static_cast<uint16_t>(r.name.size()));
    Put16(out_, 0);  // extra
    Put16(out_, 0);  // comment
    Put16(out_, 0);  // disk
    Put16(out_, 0);  // internal attributes
    Put32(out_, 0);  // external attributes
    Put32(out_, r.offset);
    out_ += r.name;
  }
  const auto dir_size = static_cast<uint32_t>(out_.size() - dir_offset);
  Put32(out_, kEndOfCentralSig);
  Put16(out_, 0);
  Put16(out_, 0);
  Put16(out_, static_cast<uint16_t>(records_.size()));
  Put16(out_, static_cast<uint16_t>(records_.size()));
  Put32(out_, dir_size);
  Put32(out_, dir_offset);
  Put16(out_, 0);
  records_.clear();
  return std::move(out_);
}

}  // namespace intgrads
