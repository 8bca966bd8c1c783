// A user's own model: a TorchScript file (torch.jit.script or torch.jit.trace,
// then .save) with a JSON sidecar that says what torch.jit cannot: the input
// size, the normalization and the class names. A TorchScript file is code: the
// worker runs whatever its graph does (docs/PROGRAMS.md, "Bring your own model").
#include <torch/script.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/file.h"
#include "common/request.h"
#include "worker/models/model.h"

namespace intgrads {

namespace {

class ScriptedClassifier final : public Classifier {
 public:
  // (Copying a torch::jit::Module shares its object.)
  ScriptedClassifier(const torch::jit::Module& module, ModelInfo info) : module_(module) {
    info_ = std::move(info);
    module_.eval();
    // Only the input needs a gradient, as for the built-in families.
    for (torch::Tensor p : module_.parameters()) {
      p.set_requires_grad(false);
      info_.num_parameters += p.numel();
    }
  }

  torch::Tensor Forward(const torch::Tensor& x) const override {
    torch::jit::IValue out = module_.forward({x});
    if (out.isTuple()) out = out.toTupleRef().elements().at(0);  // (logits, ...) as some models return
    if (!out.isTensor()) throw std::runtime_error("the TorchScript model's forward did not return a tensor");
    return out.toTensor();
  }

  void To(const torch::TensorOptions& options) override {
    if (options.has_device()) module_.to(options.device());
    if (options.has_dtype()) module_.to(options.dtype().toScalarType());
    NoteDtype(options);
  }

 private:
  // forward is not const in torch::jit, though running the graph in eval
  // mode changes nothing we keep.
  mutable torch::jit::Module module_;
};

// "model.pt" -> "model.json", then "model.pt.json".
std::vector<std::string> SidecarCandidates(const std::string& path) {
  std::vector<std::string> names;
  const size_t slash = path.rfind('/');
  const size_t dot = path.rfind('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash + 1)) {
    names.push_back(path.substr(0, dot) + ".json");
  }
  names.push_back(path + ".json");
  return names;
}

StatusOr<std::vector<double>> ReadTriple(const nlohmann::json& sidecar, const char* key, double fallback) {
  if (!sidecar.contains(key)) return std::vector<double>(3, fallback);
  const nlohmann::json& v = sidecar[key];
  if (!v.is_array() || v.size() != 3) return InvalidError(std::string(key) + ": expected 3 numbers (R, G, B)");
  std::vector<double> out;
  for (const auto& x : v) {
    if (!x.is_number() || !std::isfinite(x.get<double>())) {
      return InvalidError(std::string(key) + ": expected 3 finite numbers");
    }
    out.push_back(x.get<double>());
  }
  return out;
}

}  // namespace

StatusOr<ModelInfo> ParseModelSidecar(const std::string& text, const std::string& source) {
  const auto sidecar = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto fail = [&source](const std::string& why) { return InvalidError(source + ": " + why); };
  if (!sidecar.is_object()) return fail("expected a JSON object {\"input_size\", \"mean\", \"std\", \"classes\"}");
  ModelInfo info;
  info.family = ModelFamily::kTorchScript;
  info.variant = sidecar.value("name", std::string("torchscript"));
  if (!sidecar.contains("input_size") || !sidecar["input_size"].is_number_integer()) {
    return fail("input_size: expected the side in pixels of the square input the model takes");
  }
  info.input_size = sidecar["input_size"].get<int>();
  if (info.input_size < 1 || info.input_size > kMaxModelInputSize) {
    return fail("input_size: expected 1.." + std::to_string(kMaxModelInputSize));
  }
  auto mean = ReadTriple(sidecar, "mean", 0.0);
  auto std = ReadTriple(sidecar, "std", 1.0);
  if (!mean.ok()) return fail(mean.status().message());
  if (!std.ok()) return fail(std.status().message());
  for (int c = 0; c < 3; ++c) {
    if (!((*std)[c] > 0.0)) return fail("std: every channel's must be positive");
    info.normalization.mean[c] = static_cast<float>((*mean)[c]);
    info.normalization.std[c] = static_cast<float>((*std)[c]);
  }
  if (!sidecar.contains("classes") || !sidecar["classes"].is_array() || sidecar["classes"].empty()) {
    return fail("classes: expected the list of class names, in the order of the model's outputs");
  }
  if (sidecar["classes"].size() > static_cast<size_t>(kMaxClasses)) {
    return fail("classes: " + std::to_string(sidecar["classes"].size()) + " is over the limit of " +
                std::to_string(kMaxClasses));
  }
  std::set<std::string> seen;
  for (const auto& name : sidecar["classes"]) {
    if (!name.is_string() || name.get<std::string>().empty()) return fail("classes: expected non-empty strings");
    if (!seen.insert(name.get<std::string>()).second) {
      return fail("classes: '" + Shorten(name.get<std::string>(), 64) + "' appears twice");
    }
    info.classes.push_back(name.get<std::string>());
  }
  return info;
}

StatusOr<std::unique_ptr<Classifier>> LoadTorchScript(const std::string& path) {
  std::string sidecar_path;
  for (const std::string& candidate : SidecarCandidates(path)) {
    if (std::ifstream(candidate).good()) {
      sidecar_path = candidate;
      break;
    }
  }
  if (sidecar_path.empty()) {
    return InvalidError(
        path + ": no sidecar " + SidecarCandidates(path).front() +
        " (a JSON object with input_size, mean, std and classes; docs/PROGRAMS.md, \"Bring your own model\")");
  }
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(sidecar_path));
  ASSIGN_OR_RETURN(ModelInfo info, ParseModelSidecar(text, sidecar_path));
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return InvalidError(path + ": not a TorchScript file torch::jit::load can read (" +
                        what.substr(0, what.find('\n')).substr(0, 200) +
                        "); a torch.save checkpoint of BiT or LaNet goes to -bp or -lp");
  }
  auto model = std::make_unique<ScriptedClassifier>(module, info);
  // One forward pass on a blank input proves the model runs and gives one
  // logit per class, before the worker announces itself.
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor out = model->Forward(torch::zeros({1, 3, info.input_size, info.input_size}));
    if (out.dim() != 2 || out.size(0) != 1 || out.size(1) != static_cast<int64_t>(info.classes.size())) {
      std::string shape;
      for (int64_t s : out.sizes()) shape += (shape.empty() ? "" : " x ") + std::to_string(s);
      return InvalidError(path + ": the model maps 1 x 3 x " + std::to_string(info.input_size) + " x " +
                          std::to_string(info.input_size) + " to " + shape + ", but " + sidecar_path + " names " +
                          std::to_string(info.classes.size()) + " classes (expected 1 x " +
                          std::to_string(info.classes.size()) + " logits)");
    }
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return InvalidError(path + ": the model fails on a 1 x 3 x " + std::to_string(info.input_size) + " x " +
                        std::to_string(info.input_size) + " input: " + what.substr(0, what.find('\n')).substr(0, 300));
  }
  return std::unique_ptr<Classifier>(std::move(model));
}

}  // namespace intgrads
