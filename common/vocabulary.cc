#include "common/vocabulary.h"

#include "common/text.h"

namespace intgrads {

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

Status UnknownWord(std::string_view field, std::string_view text, const std::vector<std::string>& names) {
  return InvalidError(std::string(field) + ": unknown " + std::string(field) + " '" + Shorten(text, 64) +
                      "'; expected one of " + JoinNames(names));
}

const std::array<PayloadFormat, Words<Format>::kNames.size()>& PayloadFormats() {
  // Several JSON answers come back as one document with a list, not a zip.
  static constexpr std::array<PayloadFormat, Words<Format>::kNames.size()> kFormats = {{
      {Format::kGzip, "gzip", "application/gzip", ".gzip", true},
      {Format::kNpz, "npz", "application/x-npz", ".npz", true},
      {Format::kJson, "json", "application/json", ".json", false},
      {Format::kPng, "png", "image/png", ".png", true},
  }};
  static_assert(
      [] {
        for (size_t i = 0; i < kFormats.size(); ++i) {
          if (static_cast<size_t>(kFormats[i].format) != i || kFormats[i].name != Words<Format>::kNames[i])
            return false;
        }
        return true;
      }(),
      "PayloadFormats: one row per Format, in its order and with its name");
  return kFormats;
}

const PayloadFormat& FormatEntry(Format format) { return PayloadFormats()[static_cast<size_t>(format)]; }

}  // namespace intgrads
