// The reference configurations of the shared spec/reference folder: their
// key lists, and state dicts under the deterministic weights of its README,
// built here in C++ (float64, then float32) exactly as the README states the
// rule. Their key lists, normalization and zero-input logits are copied
// into tests/data/reference (LoadReferenceKeys); what comes from their
// CIFAR-10 image (the image, its logits, Captum's IG) is read from the
// shared folder alone (LoadReference), since no image may be committed.
#pragma once

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/torchio/torch_file.h"

namespace intgrads::testing {

inline std::optional<nlohmann::json> LoadReference(const std::string& name) {
  std::ifstream in(std::string(INTGRADS_REFERENCE_DIR) + "/" + name + ".json");
  if (!in) return std::nullopt;
  return nlohmann::json::parse(in);
}

// tests/data/reference/NAME.keys.json: state_dict, normalize_mean and _std,
// checkpoint_wrapping, num_float_params, genotype (LaNet) and
// expected_logits_zero_input_eval (all but LaNet-128/24).
inline nlohmann::json LoadReferenceKeys(const std::string& name) {
  std::ifstream in(std::string(INTGRADS_TEST_DATA_DIR) + "/reference/" + name + ".keys.json");
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

inline torch::Tensor DeterministicEntry(const std::string& key, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  auto ends_with = [&key](const std::string& suffix) {
    return key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("num_batches_tracked")) return torch::zeros(shape, torch::kInt64);
  int64_t byte_sum = 0;
  for (unsigned char c : key) byte_sum += c;
  const double phase = static_cast<double>(byte_sum % 1000) / 100.0;
  torch::Tensor values = torch::empty({n}, torch::kFloat64);
  auto* v = values.data_ptr<double>();
  const int64_t fan_in = shape.size() > 1 ? n / shape[0] : 1;  // exact: n is the product of the shape
  const double scale = shape.size() > 1 ? std::sqrt(1.0 / static_cast<double>(fan_in)) : 1.0;
  for (int64_t i = 0; i < n; ++i) {
    const double s = std::sin(0.37 * static_cast<double>(i) + phase);
    if (ends_with("running_mean"))
      v[i] = 0.05 * s;
    else if (ends_with("running_var"))
      v[i] = 16.0 * (1.0 + 0.1 * (s + 1.0));
    else if (ends_with(".bias"))
      v[i] = 0.02 * s;
    else if (shape.size() == 1)
      v[i] = 1.0 + 0.1 * s;
    else
      v[i] = s * scale;
  }
  return values.to(torch::kFloat32).reshape(shape);
}

inline StateDict DeterministicStateDict(const nlohmann::json& reference) {
  StateDict weights;
  for (const auto& entry : reference.at("state_dict")) {
    const auto key = entry[0].get<std::string>();
    weights.emplace_back(key, DeterministicEntry(key, entry[1].get<std::vector<int64_t>>()));
  }
  return weights;
}

}  // namespace intgrads::testing
