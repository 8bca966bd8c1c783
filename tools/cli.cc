#include "tools/cli.h"

#include <algorithm>
#include <cstdio>

#include "common/attributions.h"

namespace intgrads {

const char kPathFlagsHelp[] =
    "  --baseline K         {baseline} (zero, the original's, by default)\n"
    "  --baseline-image P   the baseline for --baseline image (PNG or JPEG)\n"
    "  --blur-sigma S       blur: Gaussian sigma in pixels at the model's input size (default 4)\n"
    "  --baseline-count N   uniform: baselines averaged (default 1; n_steps passes each)\n"
    "  --smoothgrad-samples N  SmoothGrad over IG: noisy inputs averaged (default 0: off; n_steps passes each)\n"
    "  --smoothgrad-sigma S the noise's sd as a share of the input's range (default 0.15)\n"
    "  --seed N             seeds the uniform baselines and the noise (default 0)\n"
    "  --tolerance T        adaptive Gauss-Legendre steps until |delta| <= T |f(x) - f(baseline)|\n"
    "  --regions R          IDG for image regions: {regions} (not none: with --format json or png)\n"
    "  --region-min-side N  quadtree: patches split while a side is longer (default 2)\n"
    "  --segments N         superpixels: about this many (default 16)\n"
    "  --top-regions N      png: the regions drawn (default 5)\n";

namespace {

template <typename E>
void FillIn(std::string* text) {
  const std::string placeholder = "{" + std::string(Words<E>::kField) + "}";
  const std::string names = JoinNames(NamesOf<E>());
  for (size_t at = text->find(placeholder); at != std::string::npos; at = text->find(placeholder, at + names.size())) {
    text->replace(at, placeholder.size(), names);
  }
}

}  // namespace

std::string WithWords(std::string text) {
  FillIn<Method>(&text);
  FillIn<Format>(&text);
  FillIn<Baseline>(&text);
  FillIn<Heatmap>(&text);
  FillIn<Sign>(&text);
  FillIn<RegionKind>(&text);
  return text;
}

std::string OptionFlagParameter(const std::string& flag) {
  if (flag.rfind("--", 0) != 0) return {};
  std::string name = flag.substr(2);
  std::replace(name.begin(), name.end(), '-', '_');
  for (const auto* names : {&PathParameters(), &RegionParameters()}) {
    if (std::find(names->begin(), names->end(), name) != names->end()) return name;
  }
  return {};
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "intgrads-images: %s\n", message.c_str());
  return 2;
}

std::optional<int> WalkFlags(const std::string& command, const std::vector<std::string>& args, const char* help,
                             ModelFlags* model_flags, const decltype(FlagReader::set)& set,
                             const decltype(FlagReader::take)& take) {
  FlagReader reader = ModelFlagReader(
      "intgrads-images: " + command, [help] { std::printf("%s\nmodel flags:\n%s", help, ModelFlagsHelp()); },
      model_flags);
  reader.set = set;
  if (take) {
    reader.take = [model_flag = reader.take, &take](const std::vector<std::string>& all, size_t* i) {
      StatusOr<bool> taken = model_flag(all, i);
      return taken.ok() && !taken.value() ? take(all, i) : taken;
    };
  }
  return ReadFlags(reader, args);
}

}  // namespace intgrads
