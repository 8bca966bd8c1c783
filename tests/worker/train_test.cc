// Training code of the default model: the trainable LaNet, and the reader of
// labelled image sets (fixtures written by tests/python/make_fixtures.py).
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

#include "common/image.h"
#include "tools/dataset.h"
#include "worker/engine/engine.h"
#include "worker/models/model.h"

namespace intgrads {
namespace {

const LanetConfig kTiny{4, 3, false, 10};

TEST(TrainableLanet, StateIsACheckpointTheServiceLoads) {
  torch::manual_seed(0);
  auto net = NewTrainableLanet(kTiny);
  StateDict state = net->State();
  EXPECT_TRUE(CheckKeys(LanetKeys(kTiny), state, "tiny LaNet").ok());
  auto served = LoadLanet(state);
  ASSERT_TRUE(served.ok()) << served.status().message();
  EXPECT_EQ((*served)->info().variant, "C4-L3");
}

TEST(TrainableLanet, GradientsReachEveryParameterAndRunningStatisticsMove) {
  torch::manual_seed(0);
  auto net = NewTrainableLanet(kTiny);
  const torch::Tensor before = net->State()[3].second.clone();  // stem.1.running_mean
  ASSERT_EQ(net->State()[3].first, "stem.1.running_mean");
  torch::Tensor loss = net->Forward(torch::randn({8, 3, 32, 32})).logsumexp(1).sum();
  loss.backward();
  size_t index = 0;
  for (const torch::Tensor& p : net->Parameters()) {
    ASSERT_TRUE(p.grad().defined()) << "parameter " << index;
    EXPECT_GT(p.grad().abs().max().item<float>(), 0.0F) << "parameter " << index;
    ++index;
  }
  EXPECT_GT((net->State()[3].second - before).abs().max().item<float>(), 0.0F);
}

TEST(TrainableLanet, LearnsAFixedBatch) {
  torch::manual_seed(0);
  auto net = NewTrainableLanet(kTiny);
  torch::optim::SGD optimizer(net->Parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  const torch::Tensor x = torch::randn({16, 3, 32, 32});
  const torch::Tensor y = torch::arange(16) % 10;
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(net->Forward(x), y);
    loss.backward();
    optimizer.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.5 * first);
  // What was learned survives the trip to the served (eval-mode) network.
  auto served = LoadLanet(net->State());
  ASSERT_TRUE(served.ok());
  torch::NoGradGuard no_grad;
  const double accuracy = (*served)->Forward(x).argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(accuracy, 0.5);
}

std::string Fixture(const std::string& name) { return std::string(INTGRADS_FIXTURE_DIR) + "/" + name; }

const std::vector<std::string> kClasses = DefaultClassNames(10);

TEST(LabeledImages, FolderTreeAndZipGiveTheSameImagesAndLabels) {
  auto folder = LoadLabeledImages(Fixture("dataset"), kClasses, {});
  ASSERT_TRUE(folder.ok()) << folder.status().message();
  auto zip = LoadLabeledImages(Fixture("dataset.zip"), kClasses, {});
  ASSERT_TRUE(zip.ok()) << zip.status().message();
  ASSERT_EQ(folder->images.sizes(), (std::vector<int64_t>{9, 32, 32, 3}));
  EXPECT_TRUE(folder->images.equal(zip->images));
  EXPECT_TRUE(folder->labels.equal(zip->labels));
  // Sorted by name: airplane (0), cat (3), ship (8); each image one colour of its class.
  EXPECT_TRUE(folder->labels.equal(torch::tensor({0, 0, 0, 3, 3, 3, 8, 8, 8}, torch::kInt64)));
  EXPECT_EQ(folder->images[0][5][7][0].item<int>(), 200);
  EXPECT_EQ(folder->images[4][0][0][1].item<int>(), 210);
  EXPECT_EQ(folder->images[8][31][31][2].item<int>(), 220);  // the 40 x 40 one, resized
}

TEST(LabeledImages, NormalizedAsTheServicePreprocesses) {
  auto set = LoadLabeledImages(Fixture("dataset"), kClasses, {});
  ASSERT_TRUE(set.ok());
  auto image = ReadImageFile(Fixture("dataset/train/ship/2.png"));  // 40 x 40
  ASSERT_TRUE(image.ok());
  ModelInfo info;
  info.normalization = FamilyNormalization(ModelFamily::kLanet);
  const torch::Tensor service = PreprocessImage(*image, info);
  EXPECT_TRUE(torch::allclose(NormalizeImages(set->images.narrow(0, 8, 1), info.normalization), service, 0, 1e-6));
}

TEST(LabeledImages, PerClassLimit) {
  DatasetOptions options;
  options.per_class = 1;
  auto set = LoadLabeledImages(Fixture("dataset.zip"), kClasses, options);
  ASSERT_TRUE(set.ok());
  EXPECT_TRUE(set->labels.equal(torch::tensor({0, 3, 8}, torch::kInt64)));
}

TEST(LabeledImages, AFolderThatIsNoClassIsAnError) {
  auto set = LoadLabeledImages(Fixture("dataset"), {"airplane", "cat"}, {});
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("'ship'"), std::string::npos) << set.status().message();
  EXPECT_FALSE(LoadLabeledImages(Fixture("nonexistent.zip"), kClasses, {}).ok());
  EXPECT_FALSE(LoadLabeledImages(Fixture("resize_same.png"), kClasses, {}).ok());  // neither zip nor folder
}

}  // namespace
}  // namespace intgrads
