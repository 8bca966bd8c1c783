#include "common/torchio/torch_file.h"

#include <cstring>
#include <map>

#include "common/file.h"
#include "common/zip.h"

namespace intgrads {

namespace {

using Kind = PickleValue::Kind;

// torch's legacy format begins with this pickled 80-bit magic number.
constexpr unsigned char kLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

// Reads ('storage', type, key, location, numel[, view_metadata]).
struct StorageId {
  torch::ScalarType dtype = torch::kFloat32;
  std::string key;
  int64_t numel = 0;
  const PickleValue* view = nullptr;  // legacy: (view_key, offset, size) or None
};

StatusOr<StorageId> ParseStorageId(const PickleValue& pid) {
  if (pid.kind != Kind::kTuple || pid.items.size() < 5 || !pid.items[0]->IsString() ||
      pid.items[0]->text != "storage") {
    return DataLossError("persistent id is not a ('storage', ...) tuple but a " + DescribeValue(pid));
  }
  const PickleValue& type = *pid.items[1];
  if (type.kind != Kind::kGlobal) return DataLossError("storage type is a " + DescribeValue(type));
  StorageId id;
  ASSIGN_OR_RETURN(id.dtype, StorageDtype(type.text));
  const PickleValue& key = *pid.items[2];
  if (key.IsString())
    id.key = key.text;
  else if (key.kind == Kind::kInt)
    id.key = std::to_string(key.integer);
  else
    return DataLossError("storage key is a " + DescribeValue(key));
  if (pid.items[4]->kind != Kind::kInt || pid.items[4]->integer < 0) return DataLossError("bad storage size");
  id.numel = pid.items[4]->integer;
  if (pid.items.size() > 5 && pid.items[5]->kind != Kind::kNone) id.view = pid.items[5].get();
  return id;
}

PickleValuePtr StorageValue(torch::Tensor flat) {
  auto v = std::make_shared<PickleValue>();
  v->kind = Kind::kStorage;
  v->tensor = std::move(flat);
  return v;
}

// Copies raw little-endian bytes into a new 1-D tensor (the file buffer goes away).
StatusOr<torch::Tensor> TensorFromBytes(std::string_view bytes, torch::ScalarType dtype, int64_t numel,
                                        const std::string& what) {
  const auto element = static_cast<int64_t>(c10::elementSize(dtype));
  if (numel < 0 || numel > static_cast<int64_t>(bytes.size()) / element) {
    // (numel * element may overflow: said in elements.)
    return DataLossError(what + ": holds " + std::to_string(bytes.size()) + " bytes, needs " + std::to_string(numel) +
                         " elements of " + std::to_string(element) + " bytes (truncated?)");
  }
  torch::Tensor t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
  if (numel > 0) std::memcpy(t.data_ptr(), bytes.data(), static_cast<size_t>(numel * element));
  return t;
}

StatusOr<PickleValuePtr> ParseZipFile(std::string_view bytes, const std::string& source) {
  auto entries_or = ReadZip(bytes);
  if (!entries_or.ok()) return DataLossError(source + ": " + entries_or.status().message());
  std::map<std::string, std::string_view> records;
  std::string prefix;
  for (const ZipEntry& e : *entries_or) {
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos) continue;
    if (e.name.compare(slash, std::string::npos, "/data.pkl") == 0) prefix = e.name.substr(0, slash + 1);
    records[e.name] = e.data;
  }
  if (prefix.empty()) return DataLossError(source + ": zip archive has no <folder>/data.pkl: not a torch.save file");
  std::map<std::string, PickleValuePtr> storages;  // shared storages are read once
  auto load_storage = [&](const PickleValue& pid) -> StatusOr<PickleValuePtr> {
    ASSIGN_OR_RETURN(StorageId id, ParseStorageId(pid));
    auto found = storages.find(id.key);
    if (found != storages.end()) return found->second;
    const std::string name = prefix + "data/" + id.key;
    auto record = records.find(name);
    if (record == records.end()) return DataLossError("storage record '" + name + "' is missing");
    ASSIGN_OR_RETURN(torch::Tensor flat, TensorFromBytes(record->second, id.dtype, id.numel, "record " + name));
    auto value = StorageValue(std::move(flat));
    storages.emplace(id.key, value);
    return value;
  };
  Unpickler unpickler(records[prefix + "data.pkl"], source + ":" + prefix + "data.pkl", load_storage);
  return unpickler.Load();
}

StatusOr<PickleValuePtr> ParseLegacyFile(std::string_view bytes, const std::string& source) {
  // Storages are named in the object pickle but their bytes come after it:
  // the object is read against placeholders that are filled in afterwards.
  struct Pending {
    StorageId id;
    torch::Tensor root;  // the whole storage, filled in at the end
  };
  std::map<std::string, std::shared_ptr<Pending>> roots;
  // The storages' bytes follow in the file: what they declare cannot exceed
  // it, so a small crafted file cannot make us allocate gigabytes.
  int64_t declared_bytes = 0;
  auto load_storage = [&](const PickleValue& pid) -> StatusOr<PickleValuePtr> {
    ASSIGN_OR_RETURN(StorageId id, ParseStorageId(pid));
    auto& root = roots[id.key];
    if (!root) {
      const auto element = static_cast<int64_t>(c10::elementSize(id.dtype));
      if (id.numel > static_cast<int64_t>(bytes.size()) / element ||
          declared_bytes + id.numel * element > static_cast<int64_t>(bytes.size())) {
        return DataLossError("storage " + id.key + " declares " + std::to_string(id.numel) +
                             " elements, more than the file holds (truncated or corrupt)");
      }
      declared_bytes += id.numel * element;
      root = std::make_shared<Pending>();
      root->id = id;
      root->root = torch::empty({id.numel}, torch::TensorOptions().dtype(id.dtype));
    }
    int64_t offset = 0, size = root->id.numel;
    if (id.view != nullptr) {
      const PickleValue& view = *id.view;
      if (view.kind != Kind::kTuple || view.items.size() != 3 || view.items[1]->kind != Kind::kInt ||
          view.items[2]->kind != Kind::kInt) {
        return DataLossError("bad storage view metadata");
      }
      offset = view.items[1]->integer;
      size = view.items[2]->integer;
      if (offset < 0 || size < 0 || offset > root->id.numel || size > root->id.numel - offset) {
        return DataLossError("storage view out of range");
      }
    }
    // The storage tensor shares memory with the root, so filling the root later fills it.
    return StorageValue(root->root.narrow(0, offset, size));
  };
  // A legacy file opens with PROTO and the magic number as a LONG1.
  if (bytes.size() < 3 || static_cast<uint8_t>(bytes[0]) != 0x80 || static_cast<uint8_t>(bytes[2]) != 0x8a) {
    return DataLossError(source + ": not a torch.save file (neither a zip archive nor the legacy format)");
  }
  Unpickler header(bytes, source, nullptr);
  ASSIGN_OR_RETURN(PickleValuePtr magic, header.Load());
  if (magic->kind != Kind::kBigInt ||
      magic->text != std::string(reinterpret_cast<const char*>(kLegacyMagic), sizeof(kLegacyMagic))) {
    return DataLossError(source + ": not a torch.save file (neither a zip archive nor the legacy magic number)");
  }
  size_t at = header.position();
  auto next = [&](Unpickler::PersistentLoader loader) -> StatusOr<PickleValuePtr> {
    Unpickler u(bytes.substr(at), source + " (at byte " + std::to_string(at) + ")", std::move(loader));
    auto v = u.Load();
    at += u.position();
    return v;
  };
  ASSIGN_OR_RETURN(PickleValuePtr protocol, next(nullptr));
  if (protocol->kind != Kind::kInt || protocol->integer != 1001) {
    return UnimplementedError(source + ": legacy protocol version is not 1001");
  }
  ASSIGN_OR_RETURN(PickleValuePtr sys_info, next(nullptr));
  if (sys_info->kind == Kind::kDict) {
    PickleValuePtr little = sys_info->Find("little_endian");
    if (little && little->kind == Kind::kBool && !little->boolean) {
      return UnimplementedError(source + ": big-endian files are not supported");
    }
  }
  ASSIGN_OR_RETURN(PickleValuePtr object, next(load_storage));
  ASSIGN_OR_RETURN(PickleValuePtr keys, next(nullptr));
  if (keys->kind != Kind::kList) return DataLossError(source + ": storage key list is a " + DescribeValue(*keys));
  for (const auto& key_value : keys->items) {
    if (!key_value->IsString()) return DataLossError(source + ": storage key is a " + DescribeValue(*key_value));
    auto found = roots.find(key_value->text);
    if (found == roots.end()) return DataLossError(source + ": storage '" + key_value->text + "' is never used");
    int64_t numel = 0;
    if (bytes.size() - at < 8) return DataLossError(source + ": truncated before storage " + key_value->text);
    std::memcpy(&numel, bytes.data() + at, 8);
    at += 8;
    Pending& pending = *found->second;
    if (numel != pending.id.numel) {
      return DataLossError(source + ": storage " + key_value->text + " holds " + std::to_string(numel) +
                           " elements, the pickle says " + std::to_string(pending.id.numel));
    }
    ASSIGN_OR_RETURN(torch::Tensor data, TensorFromBytes(bytes.substr(at), pending.id.dtype, numel,
                                                         source + ": storage " + key_value->text));
    pending.root.copy_(data);
    at += static_cast<size_t>(numel) * c10::elementSize(pending.id.dtype);
  }
  if (keys->items.size() != roots.size()) return DataLossError(source + ": some storages have no data");
  return object;
}

bool IsStateDict(const PickleValue& v) {
  if (v.kind != Kind::kDict || v.entries.empty()) return false;
  for (const auto& [key, value] : v.entries) {
    if (!key->IsString() || value->kind != Kind::kTensor) return false;
  }
  return true;
}

}  // namespace

StatusOr<PickleValuePtr> ParseTorchFile(std::string_view bytes, const std::string& source) {
  if (LooksLikeZip(bytes)) return ParseZipFile(bytes, source);
  return ParseLegacyFile(bytes, source);
}

StatusOr<PickleValuePtr> LoadTorchFile(const std::string& path) {
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) return Status(bytes.status().code(), "checkpoint: " + bytes.status().message());
  return ParseTorchFile(*bytes, path);
}

StatusOr<StateDict> ExtractStateDict(const PickleValue& root, const std::string& source) {
  const PickleValue* dict = &root;
  if (!IsStateDict(root)) {
    dict = nullptr;
    if (root.kind == Kind::kDict) {
      for (const char* name : {"model_state_dict", "state_dict", "model"}) {
        PickleValuePtr inner = root.Find(name);
        if (inner && IsStateDict(*inner)) {
          dict = inner.get();
          break;
        }
      }
    }
  }
  if (dict == nullptr) {
    std::string keys;
    if (root.kind == Kind::kDict) {
      for (const auto& [key, value] : root.entries) {
        if (key->IsString()) keys += (keys.empty() ? "" : ", ") + key->text;
      }
    }
    return InvalidError(source +
                        ": no state dict found (expected a dict of tensors or one under "
                        "'model_state_dict', 'state_dict' or 'model'; found a " +
                        DescribeValue(root) + (keys.empty() ? "" : " with keys " + keys) + ")");
  }
  StateDict weights;
  weights.reserve(dict->entries.size());
  for (const auto& [key, value] : dict->entries) {
    std::string name = key->text;
    if (name.rfind("module.", 0) == 0) name = name.substr(7);
    weights.emplace_back(std::move(name), value->tensor);
  }
  return weights;
}

namespace {

// Pickle protocol 2 opcodes the writer emits; all are allowed by
// torch.load(weights_only=True).
void PutString(std::string& out, std::string_view s) {
  out.push_back('X');  // BINUNICODE
  const auto n = static_cast<uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  out.append(s.data(), s.size());
}

void PutInt(std::string& out, int64_t v) {
  if (v >= 0 && v < 256) {
    out.push_back('K');
    out.push_back(static_cast<char>(v));
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    out.push_back('J');
    const auto v32 = static_cast<int32_t>(v);
    out.append(reinterpret_cast<const char*>(&v32), 4);
  } else {
    out.push_back('\x8a');  // LONG1
    out.push_back(8);
    out.append(reinterpret_cast<const char*>(&v), 8);
  }
}

void PutGlobal(std::string& out, std::string_view module, std::string_view name) {
  out.push_back('c');
  out.append(module);
  out.push_back('\n');
  out.append(name);
  out.push_back('\n');
}

void PutIntTuple(std::string& out, c10::IntArrayRef values) {
  out.push_back('(');
  for (int64_t v : values) PutInt(out, v);
  out.push_back('t');
}

const char* StorageClass(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat64: return "DoubleStorage";
    case torch::kFloat16: return "HalfStorage";
    case torch::kBFloat16: return "BFloat16Storage";
    case torch::kInt64: return "LongStorage";
    case torch::kInt32: return "IntStorage";
    case torch::kUInt8: return "ByteStorage";
    case torch::kBool: return "BoolStorage";
    default: return "FloatStorage";
  }
}

}  // namespace

std::string TorchSaveDict(const std::vector<SavedEntry>& entries, const std::string& archive_name) {
  std::string pickle = "\x80\x02}(";  // PROTO 2, EMPTY_DICT, MARK
  std::vector<std::pair<std::string, torch::Tensor>> storages;
  for (const SavedEntry& entry : entries) {
    PutString(pickle, entry.key);
    if (!entry.tensor.defined()) {
      PutInt(pickle, entry.integer);
      continue;
    }
    torch::Tensor t = entry.tensor.detach().to(torch::kCPU).contiguous();
    const std::string key = std::to_string(storages.size());
    // torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())
    PutGlobal(pickle, "torch._utils", "_rebuild_tensor_v2");
    pickle.push_back('(');
    pickle.push_back('(');  // persistent id tuple
    PutString(pickle, "storage");
    PutGlobal(pickle, "torch", StorageClass(t.scalar_type()));
    PutString(pickle, key);
    PutString(pickle, "cpu");
    PutInt(pickle, t.numel());
    pickle += "tQ";  // TUPLE, BINPERSID
    PutInt(pickle, 0);
    PutIntTuple(pickle, t.sizes());
    PutIntTuple(pickle, t.strides());
    pickle.push_back('\x89');  // NEWFALSE: requires_grad
    PutGlobal(pickle, "collections", "OrderedDict");
    pickle += ")R";  // EMPTY_TUPLE, REDUCE: OrderedDict()
    pickle += "tR";  // TUPLE, REDUCE
    storages.emplace_back(key, t);
  }
  pickle += "u.";  // SETITEMS, STOP
  ZipWriter zip;
  zip.Add(archive_name + "/data.pkl", pickle);
  zip.Add(archive_name + "/byteorder", "little");
  for (const auto& [key, t] : storages) {
    zip.Add(archive_name + "/data/" + key,
            std::string_view(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
  }
  zip.Add(archive_name + "/version", "3\n");
  return zip.Finish();
}

}  // namespace intgrads
