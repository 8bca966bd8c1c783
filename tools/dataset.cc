#include "tools/dataset.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "common/file.h"
#include "common/image.h"
#include "common/zip.h"

namespace intgrads {

namespace {

// An image to decode: its class index and where its bytes are.
struct Member {
  int label = 0;
  std::string path;       // folder trees
  std::string_view data;  // zips
};

}  // namespace

StatusOr<LabeledImages> LoadLabeledImages(const std::string& path, const std::vector<std::string>& classes,
                                          const DatasetOptions& options) {
  std::map<std::string, int> index;
  for (size_t i = 0; i < classes.size(); ++i) index.emplace(classes[i], static_cast<int>(i));
  std::vector<std::pair<std::string, Member>> members;  // sorted by name below
  std::string archive;
  auto add = [&](const std::string& name, Member member) -> Status {
    const std::string folder = std::filesystem::path(name).parent_path().filename().string();
    auto it = index.find(folder);
    if (it == index.end()) {
      std::string known;
      for (const std::string& c : classes) known += (known.empty() ? "" : ", ") + c;
      return InvalidError(path + ": '" + name + "' is in folder '" + folder +
                          "', which is not a class of this model (" + known + ")");
    }
    member.label = it->second;
    members.emplace_back(name, std::move(member));
    return Status::Ok();
  };
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    for (auto it = std::filesystem::recursive_directory_iterator(path, error);
         !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
      if (!it->is_regular_file() || !HasImageExtension(it->path().string())) continue;
      RETURN_IF_ERROR(add(std::filesystem::relative(it->path(), path).string(), Member{0, it->path().string(), {}}));
    }
    if (error) return NotFoundError(path + ": " + error.message());
  } else {
    ASSIGN_OR_RETURN(archive, ReadWholeFile(path));
    if (!LooksLikeZip(archive)) return InvalidError(path + " is neither a folder nor a zip archive");
    ASSIGN_OR_RETURN(std::vector<ZipEntry> entries, ReadZip(archive));
    for (const ZipEntry& entry : entries) {
      if (!HasImageExtension(entry.name)) continue;
      RETURN_IF_ERROR(add(entry.name, Member{0, {}, entry.data}));
    }
  }
  std::sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  if (options.per_class > 0) {
    std::vector<size_t> taken(classes.size(), 0);
    std::vector<std::pair<std::string, Member>> kept;
    for (auto& m : members) {
      if (taken[static_cast<size_t>(m.second.label)]++ < options.per_class) kept.push_back(std::move(m));
    }
    members = std::move(kept);
  }
  if (members.empty()) return NotFoundError(path + ": no PNG or JPEG images in <class>/ folders");

  const int64_t n = static_cast<int64_t>(members.size());
  const int size = options.size;
  LabeledImages set{torch::empty({n, size, size, 3}, torch::kUInt8), torch::empty({n}, torch::kInt64)};
  uint8_t* out = set.images.data_ptr<uint8_t>();
  int64_t* labels = set.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& [name, member] = members[static_cast<size_t>(i)];
    StatusOr<Image> image = member.path.empty() ? DecodeImage(member.data) : ReadImageFile(member.path);
    if (!image.ok())
      return InvalidError(std::string(path).append(": ").append(name).append(": ").append(image.status().message()));
    Image rgb = ToRgb(*image);
    if (rgb.width != size || rgb.height != size) rgb = ResizeBilinear(rgb, size, size);
    std::copy(rgb.pixels.begin(), rgb.pixels.end(), out + i * size * size * 3);
    labels[i] = member.label;
    if (options.progress && (i % 500 == 499 || i + 1 == n))
      options.progress(static_cast<size_t>(i + 1), members.size());
  }
  return set;
}

torch::Tensor NormalizeImages(const torch::Tensor& images, const Normalization& norm) {
  torch::Tensor mean = torch::tensor(std::vector<float>(norm.mean.begin(), norm.mean.end())).view({1, 3, 1, 1});
  torch::Tensor std = torch::tensor(std::vector<float>(norm.std.begin(), norm.std.end())).view({1, 3, 1, 1});
  return ((images.permute({0, 3, 1, 2}).to(torch::kFloat32) / 255.0) - mean) / std;
}

}  // namespace intgrads
