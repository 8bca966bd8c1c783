// libFuzzer target: building a model from a checkpoint the reader has loaded
// (worker/models/model.h, LoadModel), the step after torch_file_fuzz. The input
// picks a family and a small configuration, then edits the state dict that
// configuration needs: keys dropped, renamed or added, sizes changed, dtypes
// changed, ranks changed. The loader must refuse what it cannot serve with a
// Status (LibTorch may throw, and the worker turns that into exit 2); what it
// accepts must run a forward pass to one logit a class.
//
// Input: [family][classes][units or C][layers][aux] then edits of 4 bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "worker/models/model.h"

namespace {

using intgrads::StateDict;

torch::ScalarType Dtype(uint8_t b) {
  static const torch::ScalarType kTypes[] = {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kInt64,
                                             torch::kBFloat16};
  return kTypes[b % 5];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const bool bit = data[0] % 2 == 0;
  intgrads::KeyShapes keys;
  if (bit) {
    intgrads::BitConfig config;
    config.units = {1, 1, 1 + data[2] % 2, 1};
    config.num_classes = 1 + data[1] % 12;
    keys = intgrads::BitKeys(config);
  } else {
    intgrads::LanetConfig config;
    config.channels = 2 + data[2] % 6;
    config.layers = 1 + data[3] % 5;
    config.auxiliary = data[4] % 2 == 1;
    config.num_classes = 1 + data[1] % 12;
    keys = intgrads::LanetKeys(config);
  }
  StateDict weights;
  for (const auto& [key, shape] : keys) {
    weights.emplace_back(key, torch::full(shape, 0.01F));
  }
  for (size_t at = 5; at + 4 <= size && !weights.empty(); at += 4) {
    auto& [key, tensor] = weights[data[at + 1] % weights.size()];
    const uint8_t value = data[at + 3];
    switch (data[at] % 6) {
      case 0: weights.erase(weights.begin() + data[at + 1] % weights.size()); break;
      case 1:
        if (tensor.dim() > 0) {
          std::vector<int64_t> shape = tensor.sizes().vec();
          shape[data[at + 2] % shape.size()] = value % 40;
          tensor = torch::full(shape, 0.01F);
        }
        break;
      case 2: tensor = tensor.to(Dtype(value)); break;
      case 3: key = (value % 2 ? "module." : "") + key + (value % 3 == 0 ? ".x" : ""); break;
      case 4: weights.emplace_back(key + std::to_string(value % 4), tensor.clone()); break;
      case 5: tensor = tensor.reshape({-1}).narrow(0, 0, tensor.numel() > 0 ? 1 : 0); break;
    }
  }
  intgrads::StatusOr<std::unique_ptr<intgrads::Classifier>> model = intgrads::InvalidError("not loaded");
  try {
    model = intgrads::LoadModel(bit ? intgrads::ModelFamily::kBit : intgrads::ModelFamily::kLanet, weights);
  } catch (const std::exception&) {
    return 0;  // the worker refuses the checkpoint: LoadFlaggedModel turns this into a one-line exit 2
  }
  if (!model.ok()) return 0;
  const torch::Tensor logits = (*model)->Forward(torch::zeros({1, 3, 32, 32}));
  if (logits.dim() != 2 || logits.size(0) != 1 ||
      logits.size(1) != static_cast<int64_t>((*model)->info().classes.size())) {
    std::abort();
  }
  return 0;
}
