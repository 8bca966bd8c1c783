// libFuzzer target: the torch.save reader (zip and legacy) and the state
// dict extraction must return, never crash, on any bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/torchio/torch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto root = intgrads::ParseTorchFile(bytes, "fuzz");
  if (root.ok()) (void)intgrads::ExtractStateDict(**root, "fuzz");
  return 0;
}
