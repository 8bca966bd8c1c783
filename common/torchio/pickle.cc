#include "common/torchio/pickle.h"

#include <cstring>
#include <sstream>

namespace intgrads {

namespace {

using Kind = PickleValue::Kind;

PickleValuePtr Make(Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}
PickleValuePtr MakeInt(int64_t i) {
  auto v = Make(Kind::kInt);
  v->integer = i;
  return v;
}
PickleValuePtr MakeString(std::string_view s) {
  auto v = Make(Kind::kString);
  v->text = std::string(s);
  return v;
}

// Every opcode this reader knows, by its byte.
enum Op : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kFloat = 'F',
  kInt = 'I',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kLong = 'L',
  kBinInt2 = 'M',
  kNone = 'N',
  kPersId = 'P',
  kBinPersId = 'Q',
  kReduce = 'R',
  kString = 'S',
  kBinString = 'T',
  kShortBinString = 'U',
  kUnicode = 'V',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kGet = 'g',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kPut = 'p',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinFloat = 'G',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kProto = 0x80,
  kNewObj = 0x81,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kEmptySet = 0x8f,
  kAddItems = 0x90,
  kFrozenSet = 0x91,
  kNewObjEx = 0x92,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
};

// A little-endian two's complement integer of up to 8 bytes.
int64_t DecodeLong(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes.size(); ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  if (!bytes.empty() && bytes.size() < 8 && (static_cast<uint8_t>(bytes.back()) & 0x80)) {
    v |= ~uint64_t{0} << (8 * bytes.size());
  }
  return static_cast<int64_t>(v);
}

bool IsGlobal(const PickleValue& v, std::string_view name) { return v.kind == Kind::kGlobal && v.text == name; }

}  // namespace

PickleValue::~PickleValue() {
  std::vector<PickleValuePtr> pending;
  auto take_children = [&pending](PickleValue& v) {
    for (auto& item : v.items) pending.push_back(std::move(item));
    for (auto& [key, value] : v.entries) {
      pending.push_back(std::move(key));
      pending.push_back(std::move(value));
    }
    v.items.clear();
    v.entries.clear();
  };
  take_children(*this);
  while (!pending.empty()) {
    PickleValuePtr v = std::move(pending.back());
    pending.pop_back();
    if (v && v.use_count() == 1) take_children(*v);
  }
}

PickleValuePtr PickleValue::Find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k && k->IsString() && k->text == key) return v;
  }
  return nullptr;
}

std::string DescribeValue(const PickleValue& value) {
  switch (value.kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt:
    case Kind::kBigInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "string";
    case Kind::kTuple: return "tuple of " + std::to_string(value.items.size());
    case Kind::kList: return "list of " + std::to_string(value.items.size());
    case Kind::kDict: return "dict of " + std::to_string(value.entries.size()) + " entries";
    case Kind::kGlobal: return "global " + value.text;
    case Kind::kOpaque: return "object made by " + value.text + " (not run)";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "value";
}

StatusOr<torch::ScalarType> StorageDtype(std::string_view storage_class) {
  static const std::pair<std::string_view, torch::ScalarType> kTypes[] = {
      {"FloatStorage", torch::kFloat32},     {"DoubleStorage", torch::kFloat64}, {"HalfStorage", torch::kFloat16},
      {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kInt64},     {"IntStorage", torch::kInt32},
      {"ShortStorage", torch::kInt16},       {"CharStorage", torch::kInt8},      {"ByteStorage", torch::kUInt8},
      {"BoolStorage", torch::kBool},
  };
  const size_t dot = storage_class.rfind('.');
  const std::string_view name = dot == std::string_view::npos ? storage_class : storage_class.substr(dot + 1);
  for (const auto& [type_name, dtype] : kTypes) {
    if (name == type_name) return dtype;
  }
  return UnimplementedError("unsupported storage type '" + std::string(storage_class) + "'");
}

Status Unpickler::Error(const std::string& what) const {
  std::ostringstream message;
  message << source_ << ": pickle offset " << opcode_at_;
  if (opcode_at_ < data_.size()) {
    message << " (opcode 0x" << std::hex << static_cast<int>(static_cast<uint8_t>(data_[opcode_at_])) << std::dec
            << ")";
  }
  message << ": " << what;
  return DataLossError(message.str());
}

Status Unpickler::ReadBytes(size_t n, std::string_view* out) {
  if (n > data_.size() - pos_) return Error("truncated: needs " + std::to_string(n) + " more bytes");
  *out = data_.substr(pos_, n);
  pos_ += n;
  return Status::Ok();
}

Status Unpickler::ReadLine(std::string_view* out) {
  const size_t end = data_.find('\n', pos_);
  if (end == std::string_view::npos) return Error("truncated: unterminated line");
  *out = data_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return Status::Ok();
}

template <typename T>
Status Unpickler::ReadLE(T* out) {
  std::string_view bytes;
  RETURN_IF_ERROR(ReadBytes(sizeof(T), &bytes));
  std::memcpy(out, bytes.data(), sizeof(T));  // x86-64 and aarch64 are little-endian
  return Status::Ok();
}

template <typename T>
Status Unpickler::PushInt() {
  T v = 0;
  RETURN_IF_ERROR(ReadLE(&v));
  stack_.push_back(MakeInt(v));
  return Status::Ok();
}

template <typename Length>
Status Unpickler::ReadSized(std::string_view* out) {
  Length n = 0;
  RETURN_IF_ERROR(ReadLE(&n));
  if (static_cast<uint64_t>(n) > data_.size()) return Error("truncated: a length past the end of the data");
  return ReadBytes(static_cast<size_t>(n), out);
}

Status Unpickler::ReadMemoIndex(uint8_t op, uint64_t* index) {
  if (op == kBinPut || op == kBinGet) {
    uint8_t i = 0;
    RETURN_IF_ERROR(ReadLE(&i));
    *index = i;
  } else if (op == kLongBinPut || op == kLongBinGet) {
    uint32_t i = 0;
    RETURN_IF_ERROR(ReadLE(&i));
    *index = i;
  } else {  // PUT, GET: a decimal line
    std::string_view line;
    RETURN_IF_ERROR(ReadLine(&line));
    *index = std::strtoull(std::string(line).c_str(), nullptr, 10);
  }
  return Status::Ok();
}

StatusOr<PickleValuePtr> Unpickler::Pop() {
  if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Error("stack underflow");
  PickleValuePtr v = std::move(stack_.back());
  stack_.pop_back();
  return v;
}

StatusOr<std::vector<PickleValuePtr>> Unpickler::PopToMark() {
  if (marks_.empty()) return Error("no MARK on the stack");
  const size_t mark = marks_.back();
  marks_.pop_back();
  if (mark > stack_.size()) return Error("MARK past the stack");
  std::vector<PickleValuePtr> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(mark)),
                                    std::make_move_iterator(stack_.end()));
  stack_.resize(mark);
  return items;
}

Status Unpickler::Reduce(const PickleValuePtr& callable, const PickleValuePtr& args) {
  if (args->kind != Kind::kTuple) return Error("REDUCE arguments are not a tuple");
  const auto& a = args->items;
  if (IsGlobal(*callable, "torch._utils._rebuild_tensor_v2") || IsGlobal(*callable, "torch._utils._rebuild_tensor")) {
    if (a.size() < 4) return Error("_rebuild_tensor with " + std::to_string(a.size()) + " arguments");
    const PickleValue& storage = *a[0];
    if (storage.kind != Kind::kStorage) return Error("tensor storage is a " + DescribeValue(storage));
    if (a[1]->kind != Kind::kInt || a[2]->kind != Kind::kTuple || a[3]->kind != Kind::kTuple ||
        a[2]->items.size() != a[3]->items.size()) {
      return Error("bad tensor offset, size or stride");
    }
    const int64_t offset = a[1]->integer;
    const int64_t stored = storage.tensor.numel();
    std::vector<int64_t> size, stride;
    // The highest element index the view touches, and how many elements it
    // has: in checked arithmetic, as the sizes and strides are the file's.
    int64_t last = offset;
    int64_t elements = 1;
    bool overflow = false;
    for (size_t d = 0; d < a[2]->items.size(); ++d) {
      const PickleValue& s = *a[2]->items[d];
      const PickleValue& t = *a[3]->items[d];
      if (s.kind != Kind::kInt || t.kind != Kind::kInt || s.integer < 0 || t.integer < 0) {
        return Error("bad tensor size or stride");
      }
      size.push_back(s.integer);
      stride.push_back(t.integer);
      int64_t reach = 0;
      overflow = overflow || __builtin_mul_overflow(s.integer, elements, &elements);
      if (s.integer > 0) {
        overflow = overflow || __builtin_mul_overflow(s.integer - 1, t.integer, &reach) ||
                   __builtin_add_overflow(last, reach, &last);
      }
    }
    if (overflow || elements > 0) {
      // A view needs no more elements than its storage holds: one whose
      // strides repeat elements (a stride of 0, an expanded tensor) could
      // stand for far more memory than the file holds once copied.
      if (overflow || elements > stored) {
        return Error("tensor view of " + (overflow ? std::string("over 2^63") : std::to_string(elements)) +
                     " elements over a storage of " + std::to_string(stored) +
                     " (repeated elements, as a stride of 0 makes, are not read)");
      }
      if (offset < 0 || last >= stored) {
        return Error("tensor view reaches past its storage of " + std::to_string(stored) + " elements");
      }
    } else if (offset < 0 || offset > stored) {
      return Error("tensor view begins past its storage of " + std::to_string(stored) + " elements");
    }
    const bool empty = elements == 0;
    auto tensor = Make(Kind::kTensor);
    tensor->tensor =
        empty ? torch::empty(size, storage.tensor.options()) : storage.tensor.as_strided(size, stride, offset);
    stack_.push_back(std::move(tensor));
    return Status::Ok();
  }
  if (IsGlobal(*callable, "torch._utils._rebuild_parameter") ||
      IsGlobal(*callable, "torch._utils._rebuild_parameter_with_state")) {
    if (a.empty() || a[0]->kind != Kind::kTensor) return Error("_rebuild_parameter without a tensor");
    stack_.push_back(a[0]);
    return Status::Ok();
  }
  if (IsGlobal(*callable, "collections.OrderedDict")) {
    auto dict = Track(Make(Kind::kDict));
    if (!a.empty() && a[0]->kind == Kind::kList) {
      for (const auto& pair : a[0]->items) {
        if ((pair->kind != Kind::kTuple && pair->kind != Kind::kList) || pair->items.size() != 2) {
          return Error("OrderedDict item is not a pair");
        }
        dict->entries.emplace_back(pair->items[0], pair->items[1]);
      }
    }
    stack_.push_back(std::move(dict));
    return Status::Ok();
  }
  if (callable->kind != Kind::kGlobal && callable->kind != Kind::kOpaque) {
    return Error("REDUCE of a " + DescribeValue(*callable));
  }
  auto opaque = Make(Kind::kOpaque);  // never run: an inert placeholder
  opaque->text = callable->text;
  stack_.push_back(std::move(opaque));
  return Status::Ok();
}

PickleValuePtr Unpickler::Track(PickleValuePtr container) {
  created_.push_back(container);
  return container;
}

namespace {

enum class Color { kOpen, kDone };

// Pickles from torch.save never refer to themselves; a cycle could only leak.
// `seen` ends up holding every value reachable from `root`.
bool HasCycle(const PickleValuePtr& root, std::unordered_map<const PickleValue*, Color>& seen) {
  std::vector<std::pair<const PickleValue*, size_t>> path = {{root.get(), 0}};  // node, next child
  seen[root.get()] = Color::kOpen;
  while (!path.empty()) {
    auto& [node, next] = path.back();
    const size_t children = node->items.size() + 2 * node->entries.size();
    if (next == children) {
      seen[node] = Color::kDone;
      path.pop_back();
      continue;
    }
    const size_t i = next++;
    const PickleValue* child = i < node->items.size() ? node->items[i].get()
                               : (i - node->items.size()) % 2 == 0
                                   ? node->entries[(i - node->items.size()) / 2].first.get()
                                   : node->entries[(i - node->items.size()) / 2].second.get();
    if (child == nullptr) continue;
    auto found = seen.find(child);
    if (found != seen.end()) {
      if (found->second == Color::kOpen) return true;
      continue;
    }
    seen[child] = Color::kOpen;
    path.emplace_back(child, 0);
  }
  return false;
}

}  // namespace

StatusOr<PickleValuePtr> Unpickler::Load() {
  created_.clear();
  auto result = LoadObject();
  Status status = result.status();
  std::unordered_map<const PickleValue*, Color> reachable;
  if (result.ok() && HasCycle(*result, reachable)) {
    status = Error("the object refers to itself (a reference cycle)");
    reachable.clear();
  }
  // Break every cycle among what was built and is not returned (all of it on
  // failure; discarded values otherwise), so that all of it is freed.
  stack_.clear();
  memo_.clear();
  for (const auto& weak : created_) {
    PickleValuePtr v = weak.lock();
    if (v && !reachable.count(v.get())) {
      v->items.clear();
      v->entries.clear();
    }
  }
  created_.clear();
  if (!status.ok()) return status;
  return result;
}

StatusOr<PickleValuePtr> Unpickler::LoadObject() {
  stack_.clear();
  marks_.clear();
  memo_.clear();
  while (true) {
    opcode_at_ = pos_;
    if (pos_ >= data_.size()) return Error("truncated: no STOP opcode");
    const auto op = static_cast<uint8_t>(data_[pos_++]);
    switch (op) {
      case kProto: {
        uint8_t version = 0;
        RETURN_IF_ERROR(ReadLE(&version));
        if (version > 5) return Error("pickle protocol " + std::to_string(version) + " is newer than 5");
        break;
      }
      case kFrame: {
        uint64_t ignored = 0;
        RETURN_IF_ERROR(ReadLE(&ignored));
        break;
      }
      case kStop: {
        ASSIGN_OR_RETURN(PickleValuePtr result, Pop());
        if (!stack_.empty() || !marks_.empty()) return Error("values left on the stack at STOP");
        memo_.clear();
        return result;
      }
      case kMark: marks_.push_back(stack_.size()); break;
      case kPop: {
        ASSIGN_OR_RETURN(PickleValuePtr ignored, Pop());
        break;
      }
      case kPopMark: {
        ASSIGN_OR_RETURN(auto ignored, PopToMark());
        break;
      }
      case kDup: {
        if (stack_.empty()) return Error("DUP on an empty stack");
        stack_.push_back(stack_.back());
        break;
      }
      case kNone: stack_.push_back(Make(Kind::kNone)); break;
      case kNewTrue:
      case kNewFalse: {
        auto v = Make(Kind::kBool);
        v->boolean = op == kNewTrue;
        stack_.push_back(std::move(v));
        break;
      }
      case kBinInt: RETURN_IF_ERROR(PushInt<int32_t>()); break;
      case kBinInt1: RETURN_IF_ERROR(PushInt<uint8_t>()); break;
      case kBinInt2: RETURN_IF_ERROR(PushInt<uint16_t>()); break;
      case kLong1:
      case kLong4: {
        uint32_t n = 0;
        if (op == kLong1) {
          uint8_t n8 = 0;
          RETURN_IF_ERROR(ReadLE(&n8));
          n = n8;
        } else {
          RETURN_IF_ERROR(ReadLE(&n));
        }
        std::string_view bytes;
        RETURN_IF_ERROR(ReadBytes(n, &bytes));
        if (n <= 8) {
          stack_.push_back(MakeInt(DecodeLong(bytes)));
        } else {
          auto v = Make(Kind::kBigInt);
          v->text = std::string(bytes);
          stack_.push_back(std::move(v));
        }
        break;
      }
      case kInt:
      case kLong: {
        std::string_view line;
        RETURN_IF_ERROR(ReadLine(&line));
        std::string digits(line);
        if (!digits.empty() && digits.back() == 'L') digits.pop_back();
        if (digits == "00" || digits == "01") {  // protocol 0's False and True
          auto v = Make(Kind::kBool);
          v->boolean = digits == "01";
          stack_.push_back(std::move(v));
          break;
        }
        char* end = nullptr;
        errno = 0;
        const long long value = std::strtoll(digits.c_str(), &end, 10);
        if (digits.empty() || *end != '\0' || errno != 0) return Error("bad integer literal");
        stack_.push_back(MakeInt(value));
        break;
      }
      case kBinFloat: {
        std::string_view bytes;
        RETURN_IF_ERROR(ReadBytes(8, &bytes));
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<uint8_t>(bytes[i]);  // big-endian
        auto v = Make(Kind::kFloat);
        std::memcpy(&v->number, &bits, sizeof(bits));
        stack_.push_back(std::move(v));
        break;
      }
      case kFloat: {
        std::string_view line;
        RETURN_IF_ERROR(ReadLine(&line));
        std::string text(line);
        char* end = nullptr;
        auto v = Make(Kind::kFloat);
        v->number = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0') return Error("bad float literal");
        stack_.push_back(std::move(v));
        break;
      }
      case kBinUnicode:
      case kBinString:
      case kBinBytes:
      case kShortBinUnicode:
      case kShortBinString:
      case kShortBinBytes:
      case kBinUnicode8:
      case kBinBytes8: {
        std::string_view bytes;
        if (op == kShortBinUnicode || op == kShortBinString || op == kShortBinBytes) {
          RETURN_IF_ERROR(ReadSized<uint8_t>(&bytes));
        } else if (op == kBinUnicode8 || op == kBinBytes8) {
          RETURN_IF_ERROR(ReadSized<uint64_t>(&bytes));
        } else {
          RETURN_IF_ERROR(ReadSized<uint32_t>(&bytes));
        }
        stack_.push_back(MakeString(bytes));
        break;
      }
      case kString:
      case kUnicode: {
        std::string_view line;
        RETURN_IF_ERROR(ReadLine(&line));
        if (op == kString && line.size() >= 2 && (line.front() == '\'' || line.front() == '"')) {
          line = line.substr(1, line.size() - 2);
        }
        stack_.push_back(MakeString(line));
        break;
      }
      case kEmptyTuple: stack_.push_back(Track(Make(Kind::kTuple))); break;
      case kTuple1:
      case kTuple2:
      case kTuple3: {
        const size_t n = op - kTuple1 + 1;
        if (stack_.size() < n || (!marks_.empty() && stack_.size() - n < marks_.back())) {
          return Error("stack underflow");
        }
        auto t = Track(Make(Kind::kTuple));
        t->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        stack_.push_back(std::move(t));
        break;
      }
      case kTuple:
      case kList:
      case kFrozenSet: {
        ASSIGN_OR_RETURN(auto items, PopToMark());
        auto t = Track(Make(op == kTuple ? Kind::kTuple : Kind::kList));
        t->items = std::move(items);
        stack_.push_back(std::move(t));
        break;
      }
      case kEmptyList:
      case kEmptySet: stack_.push_back(Track(Make(Kind::kList))); break;
      case kEmptyDict: stack_.push_back(Track(Make(Kind::kDict))); break;
      case kDict: {
        ASSIGN_OR_RETURN(auto items, PopToMark());
        if (items.size() % 2 != 0) return Error("DICT with an odd number of items");
        auto d = Track(Make(Kind::kDict));
        for (size_t i = 0; i < items.size(); i += 2) d->entries.emplace_back(items[i], items[i + 1]);
        stack_.push_back(std::move(d));
        break;
      }
      case kAppend: {
        ASSIGN_OR_RETURN(PickleValuePtr item, Pop());
        if (stack_.empty() || stack_.back()->kind != Kind::kList) return Error("APPEND to a non-list");
        stack_.back()->items.push_back(std::move(item));
        break;
      }
      case kAppends:
      case kAddItems: {
        ASSIGN_OR_RETURN(auto items, PopToMark());
        if (stack_.empty() || stack_.back()->kind != Kind::kList) return Error("APPENDS to a non-list");
        auto& target = stack_.back()->items;
        target.insert(target.end(), items.begin(), items.end());
        break;
      }
      case kSetItem: {
        ASSIGN_OR_RETURN(PickleValuePtr value, Pop());
        ASSIGN_OR_RETURN(PickleValuePtr key, Pop());
        if (stack_.empty() || stack_.back()->kind != Kind::kDict) return Error("SETITEM on a non-dict");
        stack_.back()->entries.emplace_back(std::move(key), std::move(value));
        break;
      }
      case kSetItems: {
        ASSIGN_OR_RETURN(auto items, PopToMark());
        if (items.size() % 2 != 0) return Error("SETITEMS with an odd number of items");
        if (stack_.empty() || stack_.back()->kind != Kind::kDict) return Error("SETITEMS on a non-dict");
        auto& entries = stack_.back()->entries;
        for (size_t i = 0; i < items.size(); i += 2) entries.emplace_back(items[i], items[i + 1]);
        break;
      }
      case kGlobal: {
        std::string_view module, name;
        RETURN_IF_ERROR(ReadLine(&module));
        RETURN_IF_ERROR(ReadLine(&name));
        auto g = Make(Kind::kGlobal);
        g->text = std::string(module) + "." + std::string(name);
        stack_.push_back(std::move(g));
        break;
      }
      case kStackGlobal: {
        ASSIGN_OR_RETURN(PickleValuePtr name, Pop());
        ASSIGN_OR_RETURN(PickleValuePtr module, Pop());
        if (!name->IsString() || !module->IsString()) return Error("STACK_GLOBAL of non-strings");
        auto g = Make(Kind::kGlobal);
        g->text = module->text + "." + name->text;
        stack_.push_back(std::move(g));
        break;
      }
      case kReduce: {
        ASSIGN_OR_RETURN(PickleValuePtr args, Pop());
        ASSIGN_OR_RETURN(PickleValuePtr callable, Pop());
        RETURN_IF_ERROR(Reduce(callable, args));
        break;
      }
      case kNewObj:
      case kNewObjEx: {
        if (op == kNewObjEx) {
          ASSIGN_OR_RETURN(PickleValuePtr kwargs, Pop());
        }
        ASSIGN_OR_RETURN(PickleValuePtr args, Pop());
        ASSIGN_OR_RETURN(PickleValuePtr cls, Pop());
        auto opaque = Make(Kind::kOpaque);
        opaque->text = cls->text;
        stack_.push_back(std::move(opaque));
        break;
      }
      case kBuild: {
        // The state of an object (an OrderedDict's _metadata, say): not needed.
        ASSIGN_OR_RETURN(PickleValuePtr state, Pop());
        if (stack_.empty()) return Error("BUILD on an empty stack");
        break;
      }
      case kBinPersId:
      case kPersId: {
        PickleValuePtr pid;
        if (op == kBinPersId) {
          ASSIGN_OR_RETURN(pid, Pop());
        } else {
          std::string_view line;
          RETURN_IF_ERROR(ReadLine(&line));
          pid = MakeString(line);
        }
        if (!loader_) return Error("persistent id in a pickle that may not have any");
        auto loaded = loader_(*pid);
        if (!loaded.ok()) return Error(loaded.status().message());
        stack_.push_back(std::move(loaded).value());
        break;
      }
      case kBinPut:
      case kLongBinPut:
      case kPut:
      case kMemoize: {
        uint64_t index = memo_.size();  // MEMOIZE: the next free index
        if (op != kMemoize) RETURN_IF_ERROR(ReadMemoIndex(op, &index));
        if (stack_.empty()) return Error("memo store from an empty stack");
        memo_[index] = stack_.back();
        break;
      }
      case kBinGet:
      case kLongBinGet:
      case kGet: {
        uint64_t index = 0;
        RETURN_IF_ERROR(ReadMemoIndex(op, &index));
        auto it = memo_.find(index);
        if (it == memo_.end()) return Error("memo entry " + std::to_string(index) + " was never stored");
        stack_.push_back(it->second);
        break;
      }
      default: return Error("unsupported opcode");
    }
  }
}

}  // namespace intgrads
