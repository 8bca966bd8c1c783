// Minimal zip archives as torch.save writes them: stored (uncompressed)
// entries under one top folder. The reader is for untrusted files: every
// offset and size is checked against the buffer. The writer aligns each
// entry's data to 64 bytes, as PyTorch does, so readers may map it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace intgrads {

struct ZipEntry {
  std::string name;
  std::string_view data;  // points into the archive buffer
};

// Lists the entries of `archive` (which must outlive the result).
StatusOr<std::vector<ZipEntry>> ReadZip(std::string_view archive);

bool LooksLikeZip(std::string_view bytes);

class ZipWriter {
 public:
  void Add(const std::string& name, std::string_view data);
  std::string Finish();

 private:
  struct CentralRecord {
    std::string name;
    uint32_t crc = 0;
    uint32_t size = 0;
    uint32_t offset = 0;
  };
  std::string out_;
  std::vector<CentralRecord> records_;
};

}  // namespace intgrads
