// The torch.save reader against files written by real torch.save (zip and
// legacy formats; see tests/python/make_fixtures.py), and against truncated
// and corrupted copies of them.
#include "common/torchio/torch_file.h"

#include <gtest/gtest.h>

#include "common/file.h"

#include <nlohmann/json.hpp>

namespace intgrads {
namespace {

std::string ReadFile(const std::string& path) { return ReadWholeFile(path).ok() ? *ReadWholeFile(path) : ""; }

std::string FixturePath(const std::string& name) { return std::string(INTGRADS_FIXTURE_DIR) + "/" + name; }

class RealTorchSave : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!std::ifstream(FixturePath(GetParam() + ".pth"))) {
      GTEST_SKIP() << "fixture " << GetParam() << " missing: run tests/python/make_fixtures.py (needs python3-torch)";
    }
  }
};

TEST_P(RealTorchSave, ReadsEveryTensorExactly) {
  const std::string bytes = ReadFile(FixturePath(GetParam() + ".pth"));
  const auto expected = nlohmann::ordered_json::parse(ReadFile(FixturePath(GetParam() + ".json")));
  auto root = ParseTorchFile(bytes, GetParam());
  ASSERT_TRUE(root.ok()) << root.status().message();
  auto weights = ExtractStateDict(**root, GetParam());
  ASSERT_TRUE(weights.ok()) << weights.status().message();
  ASSERT_EQ(weights->size(), expected.size());
  size_t index = 0;
  for (const auto& [key, want] : expected.items()) {
    const auto& [name, tensor] = (*weights)[index++];
    EXPECT_EQ(name, key);  // in file order, without 'module.'
    std::vector<int64_t> shape = want["shape"].get<std::vector<int64_t>>();
    EXPECT_EQ(tensor.sizes().vec(), shape) << key;
    const std::map<std::string, torch::ScalarType> dtypes = {{"float32", torch::kFloat32},
                                                             {"float16", torch::kFloat16},
                                                             {"float64", torch::kFloat64},
                                                             {"int64", torch::kInt64}};
    EXPECT_EQ(tensor.scalar_type(), dtypes.at(want["dtype"].get<std::string>())) << key;
    const auto values = want["values"].get<std::vector<double>>();
    torch::Tensor flat = tensor.to(torch::kFloat64).contiguous().view(-1);
    ASSERT_EQ(flat.numel(), static_cast<int64_t>(values.size())) << key;
    for (size_t i = 0; i < values.size(); ++i)
      EXPECT_EQ(flat[static_cast<int64_t>(i)].item<double>(), values[i]) << key;
  }
}

TEST_P(RealTorchSave, RefusesEveryTruncation) {
  const std::string bytes = ReadFile(FixturePath(GetParam() + ".pth"));
  const size_t step = std::max<size_t>(1, bytes.size() / 200);
  for (size_t length = 0; length < bytes.size(); length += step) {
    auto root = ParseTorchFile(std::string_view(bytes).substr(0, length), "cut.pth");
    EXPECT_FALSE(root.ok()) << "cut to " << length << " of " << bytes.size() << " bytes";
    if (!root.ok() && length >= 16) {
      EXPECT_NE(root.status().message().find("truncated"), std::string::npos) << root.status().message();
    }
  }
}

TEST_P(RealTorchSave, SurvivesCorruption) {
  const std::string bytes = ReadFile(FixturePath(GetParam() + ".pth"));
  int refused = 0;
  for (size_t at = 0; at < bytes.size(); at += 3) {
    for (unsigned char flip : {0x01, 0x80, 0xff}) {
      std::string corrupt = bytes;
      corrupt[at] = static_cast<char>(corrupt[at] ^ flip);
      auto root = ParseTorchFile(corrupt, "corrupt");  // must return, never crash
      if (root.ok()) {
        (void)ExtractStateDict(**root, "corrupt");
      } else {
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, RealTorchSave,
                         ::testing::Values("state_dict_zip", "state_dict_legacy", "data_parallel_zip",
                                           "data_parallel_legacy", "training_checkpoint_zip",
                                           "training_checkpoint_legacy", "dtypes_zip", "dtypes_legacy"));

TEST(TorchFile, NamesWhatItCannotRead) {
  auto not_torch = ParseTorchFile("hello world", "notes.txt");
  ASSERT_FALSE(not_torch.ok());
  EXPECT_NE(not_torch.status().message().find("notes.txt"), std::string::npos);
  // A legacy magic number followed by an opcode we do not read.
  auto bad = ParseTorchFile(std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02\xff", 18),
                            "odd.pth");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("odd.pth"), std::string::npos);
  EXPECT_NE(bad.status().message().find("opcode 0xff"), std::string::npos);
  EXPECT_NE(bad.status().message().find("offset"), std::string::npos);
}

TEST(TorchFile, ALegacyFileCannotDeclareMoreThanItHolds) {
  // A 100-byte legacy file naming a storage of 1e9 floats (found by libFuzzer:
  // it made the reader allocate 4 GB before reading any data).
  const std::string bytes = std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15) +
                            std::string("\x80\x02M\xe9\x03.", 6) + std::string("\x80\x02}.", 4) +
                            std::string("\x80\x02(X\x07\x00\x00\x00", 8) + "storage" + "ctorch\nFloatStorage\n" +
                            std::string("X\x01\x00\x00\x00", 5) + "0" + std::string("X\x03\x00\x00\x00", 5) + "cpu" +
                            std::string("J\x00\xca\x9a\x3b", 5) + "NtQ.";
  auto root = ParseTorchFile(bytes, "crafted.pth");
  ASSERT_FALSE(root.ok());
  EXPECT_NE(root.status().message().find("more than the file holds"), std::string::npos) << root.status().message();
}

TEST(TorchFile, NoStateDictIsAClearError) {
  const std::string pickle = std::string("\x80\x02}X\x03\x00\x00\x00", 8) + "abcK\x01s.";
  Unpickler u(pickle, "x", nullptr);
  auto root = u.Load();
  ASSERT_TRUE(root.ok()) << root.status().message();
  auto weights = ExtractStateDict(**root, "x.pth");
  ASSERT_FALSE(weights.ok());
  EXPECT_NE(weights.status().message().find("abc"), std::string::npos);
}

TEST(TorchFile, WriterRoundTripsThroughReader) {
  torch::Tensor a = torch::arange(12, torch::kFloat32).view({3, 4});
  torch::Tensor b = torch::arange(6, torch::kFloat32).view({2, 3}).t();  // written contiguous
  const std::string bytes = TorchSaveDict({{"a", a, 0}, {"b", b, 0}, {"target_class", {}, 7}});
  auto root = ParseTorchFile(bytes, "written");
  ASSERT_TRUE(root.ok()) << root.status().message();
  ASSERT_EQ((*root)->entries.size(), 3U);
  EXPECT_TRUE(torch::equal((*root)->Find("a")->tensor, a));
  EXPECT_TRUE(torch::equal((*root)->Find("b")->tensor, b));
  EXPECT_EQ((*root)->Find("target_class")->integer, 7);
}

}  // namespace
}  // namespace intgrads
