// Bring your own model: a TorchScript module written here (Module::define,
// no Python), saved, and served through LoadFlaggedModel as --model would.
#include <gtest/gtest.h>
#include <torch/script.h>

#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "worker/engine/engine.h"
#include "worker/serving/model_flags.h"

namespace intgrads {
namespace {

class TorchScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/intgrads-script-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // f(x)[c] = sum(w[c] * x) + b[c], three classes, 4 x 4 inputs: IG from zero is exact.
  std::string SaveLinear(const std::string& name) {
    torch::jit::Module module("Linear");
    module.register_parameter("w", torch::linspace(-1, 1, int64_t{3} * 3 * 4 * 4).view({3, 48}), false);
    module.register_parameter("b", torch::tensor({0.5, -0.25, 1.0}), false);
    module.define(R"(
      def forward(self, x):
          return x.flatten(1).matmul(self.w.t()) + self.b
    )");
    std::string path = dir_ + "/" + name;
    module.save(path);
    return path;
  }

  void Write(const std::string& name, const std::string& text) { std::ofstream(dir_ + "/" + name) << text; }

  static StatusOr<std::unique_ptr<Classifier>> Load(const std::string& path) {
    ModelFlags flags;
    size_t i = 0;
    const std::vector<std::string> args = {"--model", path};
    EXPECT_TRUE(*ConsumeModelFlag(args, &i, &flags));
    torch::Device device(torch::kCPU);
    return LoadFlaggedModel(flags, &device);
  }

  std::string dir_;
};

const char kSidecar[] = R"({"input_size": 4, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0],
                            "classes": ["cat", "dog", "fish"], "name": "linear"})";

TEST_F(TorchScriptTest, ServesTheModelWithTheSidecarsClassesAndExactIg) {
  const std::string path = SaveLinear("linear.pt");
  Write("linear.json", kSidecar);
  auto model = Load(path);
  ASSERT_TRUE(model.ok()) << model.status().message();
  const ModelInfo& info = (*model)->info();
  EXPECT_EQ(info.family, ModelFamily::kTorchScript);
  EXPECT_STREQ(FamilyName(info.family), "torchscript");
  EXPECT_EQ(info.variant, "linear");
  EXPECT_EQ(info.classes, (std::vector<std::string>{"cat", "dog", "fish"}));
  EXPECT_EQ(info.input_size, 4);
  EXPECT_FLOAT_EQ(info.normalization.std[0], 0.25F);
  EXPECT_EQ(info.num_parameters, 3 * 48 + 3);

  const torch::Tensor x = torch::linspace(-2, 2, 48).view({1, 3, 4, 4});
  const torch::Tensor w = torch::linspace(-1, 1, int64_t{3} * 48).view({3, 48});
  auto schedule = MakeSchedule(Method::kGaussLegendre, 7);
  const Attribution a = Attribute(**model, x, 1, *schedule, EngineOptions());
  EXPECT_TRUE(torch::allclose(a.integrated_grads.flatten(), x.flatten() * w[1], 1e-5, 1e-6));
  EXPECT_NEAR(a.convergence_delta, 0.0, 1e-5);
  EXPECT_NEAR(a.logits[0][2].item<double>(), (x.flatten() * w[2]).sum().item<double>() + 1.0, 1e-5);
}

TEST_F(TorchScriptTest, FindsTheSidecarBesideTheFileUnderEitherName) {
  const std::string path = SaveLinear("linear.ts");
  Write("linear.ts.json", kSidecar);
  auto model = Load(path);
  ASSERT_TRUE(model.ok()) << model.status().message();
  EXPECT_EQ((*model)->info().classes.size(), 3U);
}

TEST_F(TorchScriptTest, ExplainsWhatIsWrong) {
  const std::string path = SaveLinear("linear.pt");
  auto missing = Load(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no sidecar " + dir_ + "/linear.json"), std::string::npos)
      << missing.status().message();

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1, 2]", "expected a JSON object"},
      {R"({"mean": [0, 0, 0], "std": [1, 1, 1], "classes": ["a", "b", "c"]})", "input_size"},
      {R"({"input_size": 4, "classes": ["a", "b", "c"], "std": [1, 0, 1]})", "std: every channel"},
      {R"({"input_size": 4, "classes": ["a", "b", "c"], "mean": [1, 2]})", "mean: expected 3 numbers"},
      {R"({"input_size": 4, "classes": ["a", "a", "c"]})", "'a' appears twice"},
      {R"({"input_size": 4})", "classes: expected the list"},
      {R"({"input_size": 4, "classes": ["a", "b"]})", "names 2 classes (expected 1 x 2 logits)"},
      {R"({"input_size": 5, "classes": ["a", "b", "c"]})", "fails on a 1 x 3 x 5 x 5 input"},
      {R"({"input_size": 100000, "classes": ["a"]})", "input_size: expected 1..1024"},
  };
  for (const auto& [sidecar, expected] : cases) {
    Write("linear.json", sidecar);
    auto model = Load(path);
    ASSERT_FALSE(model.ok()) << sidecar;
    EXPECT_NE(model.status().message().find(expected), std::string::npos)
        << sidecar << " -> " << model.status().message();
  }

  Write("state.json", kSidecar);
  Write("state.pt", "not a zip at all");
  auto garbage = Load(dir_ + "/state.pt");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("not a TorchScript file"), std::string::npos) << garbage.status().message();
}

TEST_F(TorchScriptTest, TheLauncherPassesTheFlagOn) {
  EXPECT_STREQ(ModelFlagName(ModelFamily::kTorchScript), "--model");
  EXPECT_STREQ(ModelFlagName(ModelFamily::kBit), "--bit-path");
  EXPECT_STREQ(ModelFlagName(ModelFamily::kLanet), "--lanet-path");
}

}  // namespace
}  // namespace intgrads
