// gzip compression and decompression of whole buffers (zlib). The worker
// compresses each response once; tests and clients decompress.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace intgrads {

// level: 0 (stored) .. 9 (smallest); 1 is the service default (see
// docs/PERFORMANCE.md: float noise barely compresses, so speed wins).
StatusOr<std::string> GzipCompress(std::string_view data, int level);
// max_output bounds the inflated size, so a gzip bomb is refused.
StatusOr<std::string> GzipDecompress(std::string_view data, size_t max_output);

}  // namespace intgrads
