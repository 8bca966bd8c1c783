#include "common/request.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace intgrads {

using nlohmann::json;

const std::vector<std::string>& Cifar10Classes() {
  static const std::vector<std::string> kClasses = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                    "dog",      "frog",       "horse", "ship", "truck"};
  return kClasses;
}

Status ValidateSteps(int n_steps, Method method, const RequestLimits& limits) {
  const int lowest = method == Method::kGaussLegendre || method == Method::kScan ? 1 : 2;
  if (n_steps < lowest || n_steps > limits.max_n_steps) {
    return InvalidError("n_steps: expected an integer from " + std::to_string(lowest) + " to " +
                        std::to_string(limits.max_n_steps) + " for method " + Name(method) + ", got " +
                        std::to_string(n_steps) + " (the upper limit is set by --max-n-steps)");
  }
  return Status::Ok();
}

Status ValidatePathRequest(const PathRequest& p, Method method, const RequestLimits& limits) {
  if (p.baseline == Baseline::kImage && p.baseline_image.pixels.empty()) {
    return InvalidError("baseline: 'image' needs a baseline_image (a file part or a base64 field)");
  }
  if (p.baseline != Baseline::kImage && !p.baseline_image.pixels.empty()) {
    return InvalidError("baseline_image: given, but baseline is '" + Name(p.baseline) + "' (set baseline=image)");
  }
  if (!(p.blur_sigma > 0.0 && p.blur_sigma <= 1000.0)) return InvalidError("blur_sigma: expected (0, 1000] pixels");
  if (p.baseline_count < 1) return InvalidError("baseline_count: must be at least 1");
  if (p.baseline_count > 1 && p.baseline != Baseline::kUniform) {
    return InvalidError("baseline_count: only uniform baselines are drawn several times");
  }
  if (p.smoothgrad_samples < 0) return InvalidError("smoothgrad_samples: must be 0 (off) or more");
  if (!(p.smoothgrad_sigma > 0.0 && p.smoothgrad_sigma <= 10.0)) {
    return InvalidError("smoothgrad_sigma: expected (0, 10] (a share of the input's range)");
  }
  const int64_t paths = int64_t{std::max(1, p.smoothgrad_samples)} * p.baseline_count;
  if (paths > limits.max_paths) {
    return TooLargeError("smoothgrad_samples x baseline_count = " + std::to_string(paths) +
                         " paths is over the limit of " + std::to_string(limits.max_paths) +
                         " (raise with --max-paths)");
  }
  if (!(p.tolerance >= 0.0 && p.tolerance < 1.0)) return InvalidError("tolerance: expected [0, 1) (0: off)");
  if (p.tolerance > 0.0 && method != Method::kGaussLegendre) {
    return InvalidError("tolerance: adaptive steps are Gauss-Legendre's; leave method at gausslegendre");
  }
  if (method == Method::kScan && paths > 1) {
    return InvalidError("method: scan follows one path; it cannot be combined with SmoothGrad or several baselines");
  }
  return Status::Ok();
}

Status ValidateRegionRequest(const RegionRequest& r, Format format) {
  if (r.min_side < 2 || r.min_side > 4096) {
    return InvalidError("region_min_side: expected 2..4096 pixels (pixels are a level of their own)");
  }
  if (r.segments < 1 || r.segments > kMaxSegments) {
    return InvalidError("segments: expected 1.." + std::to_string(kMaxSegments));
  }
  if (r.top < 1 || r.top > kMaxTopRegions)
    return InvalidError("top_regions: expected 1.." + std::to_string(kMaxTopRegions));
  if (r.kind != RegionKind::kNone && format != Format::kJson && format != Format::kPng) {
    return InvalidError("regions: the hierarchy comes back in format json (or its top regions drawn in png), not " +
                        Name(format));
  }
  return Status::Ok();
}

Status ValidateHeatmap(Heatmap heatmap, Sign sign, double outlier_perc) {
  if (sign != Sign::kNone && heatmap == Heatmap::kAbsolute) {
    return InvalidError("heatmap: absolute is our look; with sign (Captum's look) ask for sign=absolute_value");
  }
  if (!(outlier_perc >= 0.0 && outlier_perc < 100.0)) {
    return InvalidError("outlier_perc: expected a percentage in [0, 100)");
  }
  return Status::Ok();
}

Status ValidateTargets(const std::vector<int>& targets, int top_k, int num_classes, Method method,
                       const RequestLimits& limits) {
  const std::string raise = " (raise with --max-targets)";
  if (top_k < 0) return InvalidError("top_k: must be 1 or more (0: off)");
  if (top_k > 0 && !targets.empty()) return InvalidError("top_k: give either top_k or a list of targets, not both");
  if (top_k > limits.max_targets) {
    return TooLargeError("top_k: " + std::to_string(top_k) + " is over the limit of " +
                         std::to_string(limits.max_targets) + raise);
  }
  if (static_cast<int64_t>(targets.size()) > limits.max_targets) {
    return TooLargeError("target: " + std::to_string(targets.size()) + " classes is over the limit of " +
                         std::to_string(limits.max_targets) + raise);
  }
  if (top_k == 0 && targets.empty()) return InvalidError("target: no class given");
  for (size_t i = 0; i < targets.size(); ++i) {
    const int t = targets[i];
    if (t != -1 && (t < 0 || t >= num_classes)) {
      return InvalidError("target_class: index " + std::to_string(t) + " is outside 0.." +
                          std::to_string(num_classes - 1));
    }
    if (std::find(targets.begin(), targets.begin() + static_cast<std::ptrdiff_t>(i), t) !=
        targets.begin() + static_cast<std::ptrdiff_t>(i)) {
      return InvalidError("target: " + (t == -1 ? std::string("predicted") : "class " + std::to_string(t)) +
                          " appears twice");
    }
  }
  if (method == Method::kScan && (top_k > 1 || targets.size() > 1)) {
    return InvalidError("method: scan places its points for one target; ask for one, or use gausslegendre");
  }
  return Status::Ok();
}

namespace {

std::string TypeName(const json& v) { return v.type_name(); }

// "[y][x]", for messages only: building it for every pixel would cost more than reading them.
std::string Where(int y, int x) { return "[" + std::to_string(y) + "][" + std::to_string(x) + "]"; }

// One pixel value: an integer 0..255.
Status ReadChannel(const json& v, uint8_t* out, int y, int x) {
  if (!v.is_number_integer()) {
    return InvalidError(std::string("img_data: expected integers 0..255, found ") +
                        (v.is_number() ? "a non-integer number" : "a " + TypeName(v)) + " at " + Where(y, x));
  }
  const auto value = v.get<int64_t>();
  if (value < 0 || value > 255) {
    return InvalidError("img_data: value " + std::to_string(value) + " at " + Where(y, x) + " is outside 0..255");
  }
  *out = static_cast<uint8_t>(value);
  return Status::Ok();
}

}  // namespace

StatusOr<Image> ReadImageJson(const json& rows, const RequestLimits& limits) {
  if (!rows.is_array()) return InvalidError("img_data: expected a list of rows (H x W x 3), found a " + TypeName(rows));
  if (rows.empty()) return InvalidError("img_data: the image is empty (no rows)");
  const json& first_row = rows.front();
  if (!first_row.is_array()) {
    return InvalidError("img_data: expected rows to be lists (H x W x 3), found a " + TypeName(first_row) +
                        " in row 0");
  }
  if (first_row.empty()) return InvalidError("img_data: the image is empty (row 0 has no pixels)");
  Image image;
  image.height = static_cast<int>(std::min<size_t>(rows.size(), INT32_MAX));
  image.width = static_cast<int>(std::min<size_t>(first_row.size(), INT32_MAX));
  const json& first_pixel = first_row.front();
  if (first_pixel.is_array()) {
    image.channels = static_cast<int>(first_pixel.size());
    if (image.channels != 3 && image.channels != 4) {
      return InvalidError("img_data: pixels must have 3 (RGB) or 4 (RGBA) values, pixel [0][0] has " +
                          std::to_string(first_pixel.size()));
    }
  } else {
    image.channels = 1;  // a greyscale H x W array
  }
  if (image.height > limits.max_side || image.width > limits.max_side ||
      static_cast<int64_t>(image.height) * image.width > limits.max_pixels) {
    return TooLargeError("img_data: image of " + std::to_string(rows.size()) + " x " +
                         std::to_string(first_row.size()) + " pixels is over the limit of " +
                         std::to_string(limits.max_side) + " per side and " + std::to_string(limits.max_pixels) +
                         " in all (raise with --max-image-side / --max-pixels)");
  }
  image.pixels.resize(static_cast<size_t>(image.height) * image.width * image.channels);
  size_t at = 0;
  for (int y = 0; y < image.height; ++y) {
    const json& row = rows[static_cast<size_t>(y)];
    if (!row.is_array() || row.size() != static_cast<size_t>(image.width)) {
      return InvalidError("img_data: ragged image: row " + std::to_string(y) + " has " +
                          (row.is_array() ? std::to_string(row.size()) + " pixels" : "type " + TypeName(row)) +
                          ", row 0 has " + std::to_string(image.width));
    }
    for (int x = 0; x < image.width; ++x) {
      const json& pixel = row[static_cast<size_t>(x)];
      if (image.channels == 1) {
        RETURN_IF_ERROR(ReadChannel(pixel, &image.pixels[at++], y, x));
        continue;
      }
      if (!pixel.is_array() || pixel.size() != static_cast<size_t>(image.channels)) {
        return InvalidError("img_data: pixel " + Where(y, x) + " should be a list of " +
                            std::to_string(image.channels) + " values like pixel [0][0], found " +
                            (pixel.is_array() ? "one of " + std::to_string(pixel.size()) : "a " + TypeName(pixel)));
      }
      for (const json& channel : pixel) RETURN_IF_ERROR(ReadChannel(channel, &image.pixels[at++], y, x));
    }
  }
  return image;
}

StatusOr<int> ReadTargetJson(const json& target, const std::vector<std::string>& classes, const std::string& field) {
  if (target.is_string()) {
    const auto& name = target.get_ref<const std::string&>();
    const auto found = std::find(classes.begin(), classes.end(), name);
    if (found != classes.end()) return static_cast<int>(found - classes.begin());
    std::string names;
    for (const auto& c : classes) names += (names.empty() ? "" : ", ") + c;
    return InvalidError(field + ": unknown class '" + Shorten(name, 64) + "'; expected one of " + names +
                        " or an index 0.." + std::to_string(classes.size() - 1));
  }
  if (target.is_number_integer()) {
    const auto index = target.get<int64_t>();
    if (index >= 0 && index < static_cast<int64_t>(classes.size())) return static_cast<int>(index);
    return InvalidError(field + ": index " + std::to_string(index) + " is outside 0.." +
                        std::to_string(classes.size() - 1));
  }
  return InvalidError(field + ": expected a class name or an integer index, found a " + TypeName(target));
}

namespace {

// target_class, n_steps and method from the body's other members.
StatusOr<AttributionRequest> ReadOptions(const json& doc, Image image, const std::vector<std::string>& classes,
                                         const RequestLimits& limits) {
  AttributionRequest request;
  request.image = std::move(image);
  const auto target = doc.find("target_class");
  if (target == doc.end()) return InvalidError("target_class: missing (expected a class name such as 'cat')");
  ASSIGN_OR_RETURN(request.target, ReadTargetJson(*target, classes));
  if (const auto n = doc.find("n_steps"); n != doc.end() && !n->is_null()) {
    if (!n->is_number_integer()) return InvalidError("n_steps: expected an integer, found a " + TypeName(*n));
    const auto value = n->get<int64_t>();
    request.n_steps = static_cast<int>(std::clamp<int64_t>(value, -1, INT32_MAX));
    if (value != request.n_steps) request.n_steps = -1;
  }
  if (const auto m = doc.find("method"); m != doc.end() && !m->is_null()) {
    if (!m->is_string()) return InvalidError("method: expected a string, found a " + TypeName(*m));
    ASSIGN_OR_RETURN(request.method, Parse<Method>(m->get<std::string>()));
  }
  RETURN_IF_ERROR(ValidateSteps(request.n_steps, request.method, limits));
  return request;
}

// A scanner for the body as clients write it: an object whose img_data is a
// regular H x W x C (or H x W) array of integers 0..255 within the limits,
// and whose other members are strings without escapes, integers, booleans or
// null, each key once. It reads the pixels straight into the image, some
// twenty times faster than building a JSON document of them. Anything else
// (including every error) it declines, and the general parser, with its
// messages, takes the body.
class FastBody {
 public:
  explicit FastBody(std::string_view body) : p_(body.data()), end_(body.data() + body.size()) {}

  bool Scan(const RequestLimits& limits, Image* image, json* others) {
    SkipSpace();
    if (!Eat('{')) return false;
    SkipSpace();
    if (Eat('}')) return false;  // no img_data
    bool seen_image = false;
    for (;;) {
      std::string_view key;
      if (!String(&key) || !(SkipSpace(), Eat(':'))) return false;
      SkipSpace();
      if (key == "img_data") {
        if (seen_image || !Pixels(limits, image)) return false;
        seen_image = true;
      } else {
        if (others->contains(std::string(key))) return false;
        json value;
        if (!Scalar(&value)) return false;
        (*others)[std::string(key)] = std::move(value);
      }
      SkipSpace();
      if (Eat('}')) break;
      if (!Eat(',')) return false;
      SkipSpace();
    }
    SkipSpace();
    return seen_image && p_ == end_;
  }

 private:
  void SkipSpace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool Eat(char c) {
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool String(std::string_view* out) {
    if (!Eat('"')) return false;
    const char* start = p_;
    while (p_ < end_ && *p_ != '"') {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '\\' || c < 0x20 || c >= 0x80) return false;  // escapes, control bytes, UTF-8: the general parser
      ++p_;
    }
    if (p_ == end_) return false;
    *out = std::string_view(start, static_cast<size_t>(p_ - start));
    ++p_;
    return true;
  }
  // An integer 0..255 in JSON's grammar (no leading zeros, no fraction).
  bool Channel(uint8_t* out) {
    if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
    int value = *p_++ - '0';
    if (value == 0 && p_ < end_ && *p_ >= '0' && *p_ <= '9') return false;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      value = value * 10 + (*p_++ - '0');
      if (value > 255) return false;
    }
    if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) return false;
    *out = static_cast<uint8_t>(value);
    return true;
  }
  // One pixel: a value (grey) or [v, v, v(, v)]; the first fixes the layout.
  bool Pixel(int* channels, std::vector<uint8_t>* pixels) {
    if (!Eat('[')) {
      if (*channels == 0) *channels = 1;
      pixels->emplace_back();
      return *channels == 1 && Channel(&pixels->back());
    }
    if (*channels == 1) return false;  // a list among grey values
    int count = 0;
    do {
      SkipSpace();
      pixels->emplace_back();
      if (!Channel(&pixels->back())) return false;
      ++count;
      SkipSpace();
    } while (Eat(','));
    if (!Eat(']')) return false;
    if (*channels == 0 && (count == 3 || count == 4)) *channels = count;
    return count == *channels;
  }
  bool Pixels(const RequestLimits& limits, Image* image) {
    if (!Eat('[')) return false;
    int height = 0, width = -1, channels = 0;
    std::vector<uint8_t> pixels;
    do {
      SkipSpace();
      if (!Eat('[')) return false;
      int row = 0;
      do {
        SkipSpace();
        if (!Pixel(&channels, &pixels)) return false;
        ++row;
        SkipSpace();
      } while (Eat(','));
      if (!Eat(']') || (width >= 0 && row != width)) return false;
      width = row;
      if (++height > limits.max_side || width > limits.max_side ||
          static_cast<int64_t>(height) * width > limits.max_pixels) {
        return false;
      }
      SkipSpace();
    } while (Eat(','));
    if (!Eat(']')) return false;
    image->height = height;
    image->width = width;
    image->channels = channels;
    image->pixels = std::move(pixels);
    return true;
  }
  bool Scalar(json* out) {
    std::string_view text;
    if (p_ < end_ && *p_ == '"') {
      if (!String(&text)) return false;
      *out = std::string(text);
      return true;
    }
    for (const auto& [word, value] :
         {std::pair<std::string_view, json>{"true", true}, {"false", false}, {"null", nullptr}}) {
      if (static_cast<size_t>(end_ - p_) >= word.size() && std::string_view(p_, word.size()) == word) {
        p_ += word.size();
        *out = value;
        return true;
      }
    }
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    const char* digits = p_;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    const auto length = p_ - digits;
    if (length == 0 || length > 18 || (*digits == '0' && length > 1)) return false;
    if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E')) return false;
    *out = std::stoll(std::string(start, p_));
    return true;
  }

  const char* p_;
  const char* end_;
};

}  // namespace

StatusOr<AttributionRequest> ParseModelRequest(std::string_view body, const std::vector<std::string>& classes,
                                               const RequestLimits& limits) {
  Image image;
  json others = json::object();
  if (FastBody(body).Scan(limits, &image, &others)) return ReadOptions(others, std::move(image), classes, limits);
  return ParseModelRequestGeneral(body, classes, limits);
}

StatusOr<AttributionRequest> ParseModelRequestGeneral(std::string_view body, const std::vector<std::string>& classes,
                                                      const RequestLimits& limits) {
  // Depth-limited, exception-free parse: a deeply nested body is refused, not recursed into.
  bool too_deep = false;
  json::parser_callback_t guard = [&too_deep](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::array_start || event == json::parse_event_t::object_start) && depth > 8) {
      too_deep = true;
    }
    return !too_deep;
  };
  json doc = json::parse(body.begin(), body.end(), guard, /*allow_exceptions=*/false);
  if (too_deep) return InvalidError("body: JSON nested deeper than 8 levels; expected {\"img_data\": H x W x 3, ...}");
  if (doc.is_discarded()) return MalformedError("body: not valid JSON");
  if (!doc.is_object()) return InvalidError("body: expected a JSON object, found a " + TypeName(doc));
  const auto img = doc.find("img_data");
  if (img == doc.end()) return InvalidError("img_data: missing (expected H x W x 3 integers 0..255)");
  ASSIGN_OR_RETURN(Image image, ReadImageJson(*img, limits));
  return ReadOptions(doc, std::move(image), classes, limits);
}

}  // namespace intgrads
