// A safe reader for Python pickles as torch.save writes them (protocols 0-5,
// in practice 2). It builds plain values (None, bools, ints, floats,
// strings, tuples, lists, dicts) and tensors, and never executes anything:
// a GLOBAL becomes a name, and a REDUCE of a name we do not know becomes an
// inert Opaque value that only fails if a tensor is asked of it.
//
//   Unpickler reader(bytes, "model.pth", load_storage);
//   ASSIGN_OR_RETURN(PickleValuePtr root, reader.Load());
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"

namespace intgrads {

struct PickleValue;
using PickleValuePtr = std::shared_ptr<PickleValue>;

struct PickleValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kBigInt,  // more than 64 bits: `text` holds the little-endian two's complement bytes
    kFloat,
    kString,  // str and bytes alike, in `text`
    kTuple,
    kList,
    kDict,
    kGlobal,   // a class or function name "module.name", in `text`
    kOpaque,   // the result of calling a global we do not run, named in `text`
    kStorage,  // a torch storage as a 1-D tensor of its dtype
    kTensor,
  };
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  std::string text;
  std::vector<PickleValuePtr> items;                               // tuple, list
  std::vector<std::pair<PickleValuePtr, PickleValuePtr>> entries;  // dict, in insertion order
  torch::Tensor tensor;                                            // storage, tensor

  PickleValue() = default;
  PickleValue(const PickleValue&) = delete;
  PickleValue& operator=(const PickleValue&) = delete;
  ~PickleValue();  // iterative, so a deeply nested input cannot overflow the stack

  bool IsString() const { return kind == Kind::kString; }
  // The dict entry with string key `key`, or nullptr.
  PickleValuePtr Find(std::string_view key) const;
};

// Describes `value` in a few words for error messages ("dict of 3 entries").
std::string DescribeValue(const PickleValue& value);

class Unpickler {
 public:
  // Turns a persistent id (torch: ('storage', type, key, location, numel, ...))
  // into a value, usually a kStorage.
  using PersistentLoader = std::function<StatusOr<PickleValuePtr>(const PickleValue& pid)>;

  Unpickler(std::string_view data, std::string source, PersistentLoader loader)
      : data_(data), source_(std::move(source)), loader_(std::move(loader)) {}

  // Reads one pickle from the current position up to its STOP.
  StatusOr<PickleValuePtr> Load();
  size_t position() const { return pos_; }

 private:
  StatusOr<PickleValuePtr> LoadObject();
  PickleValuePtr Track(PickleValuePtr container);  // remembered, to break cycles on failure
  Status Error(const std::string& what) const;
  StatusOr<PickleValuePtr> Pop();
  StatusOr<std::vector<PickleValuePtr>> PopToMark();
  Status Reduce(const PickleValuePtr& callable, const PickleValuePtr& args);
  Status ReadBytes(size_t n, std::string_view* out);
  Status ReadLine(std::string_view* out);
  template <typename T>
  Status ReadLE(T* out);
  template <typename Length>
  Status ReadSized(std::string_view* out);  // a length, then that many bytes
  Status ReadMemoIndex(uint8_t op, uint64_t* index);
  template <typename T>
  Status PushInt();  // BININT, BININT1, BININT2: a little-endian T

  std::string_view data_;
  std::string source_;
  PersistentLoader loader_;
  size_t pos_ = 0;
  size_t opcode_at_ = 0;
  std::vector<PickleValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValuePtr> memo_;
  std::vector<std::weak_ptr<PickleValue>> created_;
};

// Tensor dtype of a torch storage class name such as "FloatStorage".
StatusOr<torch::ScalarType> StorageDtype(std::string_view storage_class);

}  // namespace intgrads
