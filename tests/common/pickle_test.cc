// The pickle reader on hand-made pickles: what it builds, what it refuses,
// and that it runs nothing.
#include "common/torchio/pickle.h"

#include <gtest/gtest.h>

namespace intgrads {
namespace {

StatusOr<PickleValuePtr> Load(const std::string& bytes) {
  Unpickler u(bytes, "test.pkl", nullptr);
  return u.Load();
}

TEST(Pickle, BuildsPlainValues) {
  // pickle.dumps({'a': [1, -2, 3.5, None, True], 'b': ('x', 70000)}, protocol=2)
  const std::string bytes(
      "\x80\x02\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x61\x71\x01\x5d\x71\x02\x28\x4b\x01\x4a\xfe\xff\xff\xff"
      "\x47\x40\x0c\x00\x00\x00\x00\x00\x00\x4e\x88\x65\x58\x01\x00\x00\x00\x62\x71\x03\x58\x01\x00\x00\x00"
      "\x78\x71\x04\x4a\x70\x11\x01\x00\x86\x71\x05\x75\x2e",
      63);
  auto v = Load(bytes);
  ASSERT_TRUE(v.ok()) << v.status().message();
  const PickleValuePtr a = (*v)->Find("a");
  ASSERT_TRUE(a);
  ASSERT_EQ(a->items.size(), 5U);
  EXPECT_EQ(a->items[0]->integer, 1);
  EXPECT_EQ(a->items[1]->integer, -2);
  EXPECT_DOUBLE_EQ(a->items[2]->number, 3.5);
  EXPECT_EQ(a->items[3]->kind, PickleValue::Kind::kNone);
  EXPECT_TRUE(a->items[4]->boolean);
  const PickleValuePtr b = (*v)->Find("b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->items[0]->text, "x");
  EXPECT_EQ(b->items[1]->integer, 70000);
}

TEST(Pickle, UnknownGlobalsBecomeInertPlaceholders) {
  // os.system('echo hi') must not run: it becomes an Opaque value.
  const std::string bytes = std::string("\x80\x02\x63os\nsystem\nX\x07\x00\x00\x00", 18) + "echo hi\x85R.";
  auto v = Load(bytes);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ((*v)->kind, PickleValue::Kind::kOpaque);
  EXPECT_EQ((*v)->text, "os.system");
}

TEST(Pickle, RefusesWithOffsetAndOpcode) {
  auto v = Load(std::string("\x80\x02K\x01\xfe", 5));
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("test.pkl: pickle offset 4 (opcode 0xfe)"), std::string::npos)
      << v.status().message();
  EXPECT_FALSE(Load("\x80\x02").ok());                                           // no STOP
  EXPECT_FALSE(Load(std::string("\x80\x02X\xff\xff\x00\x00", 7) + "ab.").ok());  // string past the end
  EXPECT_FALSE(Load("\x80\x02h\x05.").ok());                                     // memo never stored
  EXPECT_FALSE(Load("\x80\x02s.").ok());                                         // SETITEM on nothing
  EXPECT_FALSE(Load("\x80\x02Q.").ok());                                         // persistent id without a loader
  EXPECT_FALSE(Load("\x80\x02K\x01K\x02.").ok());                                // values left at STOP
}

TEST(Pickle, DeepNestingDoesNotOverflowTheStack) {
  // 200,000 nested lists: ]( ]( ]( ... then APPENDS back out.
  std::string bytes = "\x80\x02";
  const int depth = 200000;
  for (int i = 0; i < depth; ++i) bytes += "](";
  bytes += "]";
  for (int i = 0; i < depth; ++i) bytes += "e";
  bytes += ".";
  auto v = Load(bytes);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ((*v)->kind, PickleValue::Kind::kList);
}

TEST(Pickle, RefusesReferenceCycles) {
  // l = []; l.append(l): EMPTY_LIST, BINPUT 0, BINGET 0, APPEND, STOP.
  auto v =
      Load(std::string("\x80\x02]q\x00h\x00"
                       "a.",
                       9));
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("cycle"), std::string::npos) << v.status().message();
  // A discarded cycle (l = []; l.append(l); then POP and return None) is freed:
  // run under LeakSanitizer (docs/TESTING.md) this would report a leak.
  auto discarded =
      Load(std::string("\x80\x02]q\x00h\x00"
                       "a0N.",
                       11));
  ASSERT_TRUE(discarded.ok()) << discarded.status().message();
  EXPECT_EQ((*discarded)->kind, PickleValue::Kind::kNone);
  // A shared (acyclic) child is fine: [x, x].
  auto shared =
      Load(std::string("\x80\x02](]q\x00h\x00"
                       "e.",
                       11));
  ASSERT_TRUE(shared.ok()) << shared.status().message();
  EXPECT_EQ((*shared)->items.size(), 2U);
}

// torch._utils._rebuild_tensor_v2(<a storage of `stored` floats>, offset, size, stride, False, {}),
// with each of offset, size and stride given as pickled bytes.
StatusOr<PickleValuePtr> RebuildTensor(int64_t stored, const std::string& offset, const std::string& size,
                                       const std::string& stride) {
  const std::string bytes = std::string("\x80\x02", 2) + "ctorch._utils\n_rebuild_tensor_v2\n(" +
                            std::string("X\x07\x00\x00\x00", 5) + "storage\x85Q" + offset + size + stride + "\x89}tR.";
  Unpickler u(bytes, "crafted.pkl", [stored](const PickleValue&) -> StatusOr<PickleValuePtr> {
    auto storage = std::make_shared<PickleValue>();
    storage->kind = PickleValue::Kind::kStorage;
    storage->tensor = torch::zeros({stored});
    return storage;
  });
  return u.Load();
}

// Pickled integers: BININT1 for small ones, LONG1 for 2^40 and 2^62.
const std::string k0("K\x00", 2), k1("K\x01", 2), k2("K\x02", 2), k256("M\x00\x01", 3);
const std::string k2_40("\x8a\x06\x00\x00\x00\x00\x00\x01", 8);
const std::string k2_62("\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40", 10);
const std::string kMillion("J\x40\x42\x0f\x00", 5);
std::string Tuple2(const std::string& a, const std::string& b) { return a + b + "\x86"; }

TEST(Pickle, TensorViewsWithinTheirStorageAreRead) {
  auto v = RebuildTensor(6, k0, Tuple2(k2, std::string("K\x03", 2)), Tuple2(std::string("K\x03", 2), k1));
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ((*v)->tensor.sizes(), (std::vector<int64_t>{2, 3}));
  auto transposed = RebuildTensor(6, k0, Tuple2(std::string("K\x03", 2), k2), Tuple2(k1, std::string("K\x03", 2)));
  ASSERT_TRUE(transposed.ok()) << transposed.status().message();
  auto empty = RebuildTensor(0, k0, Tuple2(k0, k256), Tuple2(k256, k1));
  ASSERT_TRUE(empty.ok()) << empty.status().message();
  EXPECT_EQ((*empty)->tensor.numel(), 0);
}

// Sizes and strides are the file's: the arithmetic on them is checked, and a
// view that stands for more elements than its storage holds is refused. A
// 340-byte checkpoint whose size times stride overflowed int64 made LibTorch
// throw in as_strided, and the worker aborted; a stride-0 view of (1000000,
// 256) over 256 floats loaded, and served with 1.29 GB resident.
TEST(Pickle, TensorViewsThatOverflowOrRepeatElementsAreRefused) {
  struct Case {
    std::string name, size, stride, error;
  };
  for (const Case& c : std::vector<Case>{
           {"overflowing size x stride", Tuple2(k2_40, k2_40), Tuple2(k2_40, k2_40), "over 2^63 elements"},
           {"overflowing element count", Tuple2(k2_62, k2_62), Tuple2(k0, k0), "over 2^63 elements"},
           {"a stride of 0", Tuple2(kMillion, k256), Tuple2(k0, k1), "256000000 elements over a storage of 256"},
           {"strides 0 everywhere", Tuple2(k2_40, k2_40), Tuple2(k0, k0), "over 2^63 elements"},
           {"past the storage", Tuple2(k2, k256), Tuple2(k256, k1), "512 elements over a storage of 256"},
       }) {
    auto v = RebuildTensor(256, k0, c.size, c.stride);
    ASSERT_FALSE(v.ok()) << c.name;
    EXPECT_NE(v.status().message().find(c.error), std::string::npos) << c.name << ": " << v.status().message();
  }
  // An offset past the storage, with a view that fits otherwise.
  auto offset = RebuildTensor(256, k256, Tuple2(k1, k1), Tuple2(k1, k1));
  ASSERT_FALSE(offset.ok());
  EXPECT_NE(offset.status().message().find("reaches past its storage"), std::string::npos) << offset.status().message();
  auto negative = RebuildTensor(256, std::string("J\xff\xff\xff\xff", 5), Tuple2(k1, k1), Tuple2(k1, k1));
  EXPECT_FALSE(negative.ok());
}

TEST(Pickle, StorageTypes) {
  EXPECT_EQ(*StorageDtype("torch.FloatStorage"), torch::kFloat32);
  EXPECT_EQ(*StorageDtype("torch.HalfStorage"), torch::kFloat16);
  EXPECT_EQ(*StorageDtype("torch.LongStorage"), torch::kInt64);
  EXPECT_FALSE(StorageDtype("torch.ComplexFloatStorage").ok());
}

}  // namespace
}  // namespace intgrads
