// The words of a request as enums: the integration rule, the payload format,
// the baseline, the heatmap's look and the region kind. Each enum has one
// table of names, in the order the docs list them; text becomes an enum only
// at the edge (a request's field, a wire header, a command-line flag) through
// Parse, whose refusal names the field and the words it knows.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace intgrads {

// The integration rules of compat.md, as Captum names them, and the scan
// (points placed from a forward-only scan of the path; worker/engine/engine.h).
enum class Method : uint8_t { kGaussLegendre, kRiemannLeft, kRiemannRight, kRiemannMiddle, kRiemannTrapezoid, kScan };
// The encodings of an attribution (PayloadFormats, worker/formats/).
enum class Format : uint8_t { kGzip, kNpz, kJson, kPng };
// Where the path starts (worker/engine/engine.h, MakePaths).
enum class Baseline : uint8_t { kZero, kBlack, kWhite, kBlur, kUniform, kImage };
// A PNG heatmap's look, ours: red positive and blue negative, or |IG|.
enum class Heatmap : uint8_t { kSigned, kAbsolute };
// Captum's look (visualize_image_attr), which replaces ours when set.
enum class Sign : uint8_t { kNone, kAll, kPositive, kNegative, kAbsoluteValue };
// Integrated Directional Gradients for regions (worker/engine/regions.h).
enum class RegionKind : uint8_t { kNone, kQuadtree, kSuperpixels };

// The names of each enum's values, indexed by value, and the field that
// carries it in requests.
template <typename E>
struct Words;
template <>
struct Words<Method> {
  static constexpr std::string_view kField = "method";
  static constexpr std::array<std::string_view, 6> kNames = {"gausslegendre",  "riemann_left",      "riemann_right",
                                                             "riemann_middle", "riemann_trapezoid", "scan"};
};
template <>
struct Words<Format> {
  static constexpr std::string_view kField = "format";
  static constexpr std::array<std::string_view, 4> kNames = {"gzip", "npz", "json", "png"};
};
template <>
struct Words<Baseline> {
  static constexpr std::string_view kField = "baseline";
  static constexpr std::array<std::string_view, 6> kNames = {"zero", "black", "white", "blur", "uniform", "image"};
};
template <>
struct Words<Heatmap> {
  static constexpr std::string_view kField = "heatmap";
  static constexpr std::array<std::string_view, 2> kNames = {"signed", "absolute"};
};
template <>
struct Words<Sign> {
  static constexpr std::string_view kField = "sign";
  // kNone is the field left out or empty.
  static constexpr std::array<std::string_view, 5> kNames = {"", "all", "positive", "negative", "absolute_value"};
};
template <>
struct Words<RegionKind> {
  static constexpr std::string_view kField = "regions";
  static constexpr std::array<std::string_view, 3> kNames = {"none", "quadtree", "superpixels"};
};

template <typename E>
constexpr std::string_view NameOf(E value) {
  return Words<E>::kNames[static_cast<size_t>(value)];
}
template <typename E>
std::string Name(E value) {
  return std::string(NameOf(value));
}

// The name, for logs and test messages.
template <typename E, typename = decltype(Words<E>::kNames)>
std::ostream& operator<<(std::ostream& out, E value) {
  return out << NameOf(value);
}

// Every value in table order.
template <typename E>
constexpr std::array<E, Words<E>::kNames.size()> ValuesOf() {
  std::array<E, Words<E>::kNames.size()> values{};
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<E>(i);
  return values;
}

// The names a user may give, in table order (Sign's empty name left out).
template <typename E>
std::vector<std::string> NamesOf() {
  std::vector<std::string> names;
  for (std::string_view name : Words<E>::kNames) {
    if (!name.empty()) names.emplace_back(name);
  }
  return names;
}

template <typename E>
std::optional<E> FromName(std::string_view name) {
  for (size_t i = 0; i < Words<E>::kNames.size(); ++i) {
    if (Words<E>::kNames[i] == name) return static_cast<E>(i);
  }
  return std::nullopt;
}

// "a, b, c": the names for messages and help texts.
std::string JoinNames(const std::vector<std::string>& names);

// The value `text` names, or an invalid-argument Status:
// "method: unknown method 'simpson'; expected one of gausslegendre, ...".
Status UnknownWord(std::string_view field, std::string_view text, const std::vector<std::string>& names);
template <typename E>
StatusOr<E> Parse(std::string_view text) {
  if (const std::optional<E> value = FromName<E>(text)) return *value;
  return UnknownWord(Words<E>::kField, text, NamesOf<E>());
}

// A payload format's entry in the registry: what negotiation, the zip of
// many answers, the OpenAPI document and the help texts read. The encoders
// are the worker's (worker/formats/formats.h, EncoderOf).
struct PayloadFormat {
  Format format;
  std::string_view name;          // "gzip", the request's `format`
  std::string_view content_type;  // "application/gzip", what Accept names
  std::string_view extension;     // ".gzip", for file names
  bool zips = true;               // whether answers in it can go in a zip of many (all can today)
};
const std::array<PayloadFormat, Words<Format>::kNames.size()>& PayloadFormats();
const PayloadFormat& FormatEntry(Format format);

}  // namespace intgrads
