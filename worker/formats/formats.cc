#include "worker/formats/formats.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/gzip.h"
#include "common/zip.h"
#include "worker/formats/heatmap.h"

namespace intgrads {

namespace {

// numpy's .npy, version 1.0: magic, header length, a Python dict literal
// padded with spaces to a 64-byte boundary, then the little-endian data.
std::string Npy(const std::string& descr, const std::vector<int64_t>& shape, const void* data, size_t bytes) {
  std::string dims;  // (1, 3), (5,), ()
  for (size_t i = 0; i < shape.size(); ++i) dims += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ',';
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(data), bytes);
  return out;
}

std::string NpyOf(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.to(torch::kCPU).contiguous();
  const std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  if (t.scalar_type() == torch::kFloat64) return Npy("<f8", shape, t.data_ptr(), t.numel() * 8);
  const torch::Tensor f = t.to(torch::kFloat32);
  return Npy("<f4", shape, f.data_ptr(), f.numel() * 4);
}

// Nested lists of a float tensor's values, shortest round-trip form; a
// non-finite value is null (JSON has no NaN).
void AppendNested(std::string& out, const float* data, const std::vector<int64_t>& shape, size_t dim) {
  if (dim == shape.size()) {
    if (!std::isfinite(*data)) {
      out += "null";
      return;
    }
    char buffer[32];
    auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer), *data);
    out.append(buffer, error == std::errc() ? end : buffer);
    return;
  }
  int64_t stride = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) stride *= shape[d];
  out += '[';
  for (int64_t i = 0; i < shape[dim]; ++i) {
    if (i > 0) out += ',';
    AppendNested(out, data + i * stride, shape, dim + 1);
  }
  out += ']';
}

std::string NestedOf(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.to(torch::kCPU).to(torch::kFloat32).contiguous();
  std::string out;
  out.reserve(static_cast<size_t>(t.numel()) * 11 + 16);
  AppendNested(out, t.data_ptr<float>(), std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), 0);
  return out;
}

// Rows of 5 pixels, the leftmost in bit 4.
struct Glyph {
  char c;
  uint8_t rows[7];
};

constexpr Glyph kFont[] = {
    {'A', {14, 17, 17, 31, 17, 17, 17}}, {'B', {30, 17, 17, 30, 17, 17, 30}}, {'C', {14, 17, 16, 16, 16, 17, 14}},
    {'D', {30, 17, 17, 17, 17, 17, 30}}, {'E', {31, 16, 16, 30, 16, 16, 31}}, {'F', {31, 16, 16, 30, 16, 16, 16}},
    {'G', {14, 17, 16, 23, 17, 17, 15}}, {'H', {17, 17, 17, 31, 17, 17, 17}}, {'I', {14, 4, 4, 4, 4, 4, 14}},
    {'J', {7, 2, 2, 2, 2, 18, 12}},      {'K', {17, 18, 20, 24, 20, 18, 17}}, {'L', {16, 16, 16, 16, 16, 16, 31}},
    {'M', {17, 27, 21, 21, 17, 17, 17}}, {'N', {17, 17, 25, 21, 19, 17, 17}}, {'O', {14, 17, 17, 17, 17, 17, 14}},
    {'P', {30, 17, 17, 30, 16, 16, 16}}, {'Q', {14, 17, 17, 17, 21, 18, 13}}, {'R', {30, 17, 17, 30, 20, 18, 17}},
    {'S', {15, 16, 16, 14, 1, 1, 30}},   {'T', {31, 4, 4, 4, 4, 4, 4}},       {'U', {17, 17, 17, 17, 17, 17, 14}},
    {'V', {17, 17, 17, 17, 17, 10, 4}},  {'W', {17, 17, 17, 21, 21, 21, 10}}, {'X', {17, 17, 10, 4, 10, 17, 17}},
    {'Y', {17, 17, 10, 4, 4, 4, 4}},     {'Z', {31, 1, 2, 4, 8, 16, 31}},     {'0', {14, 17, 19, 21, 25, 17, 14}},
    {'1', {4, 12, 4, 4, 4, 4, 14}},      {'2', {14, 17, 1, 2, 4, 8, 31}},     {'3', {31, 2, 4, 2, 1, 17, 14}},
    {'4', {2, 6, 10, 18, 31, 2, 2}},     {'5', {31, 16, 30, 1, 1, 17, 14}},   {'6', {6, 8, 16, 30, 17, 17, 14}},
    {'7', {31, 1, 2, 4, 8, 8, 8}},       {'8', {14, 17, 17, 14, 17, 17, 14}}, {'9', {14, 17, 17, 15, 1, 2, 12}},
    {'.', {0, 0, 0, 0, 0, 12, 12}},      {'-', {0, 0, 0, 31, 0, 0, 0}},       {'+', {0, 4, 4, 31, 4, 4, 0}},
    {':', {0, 12, 12, 0, 12, 12, 0}},    {'=', {0, 0, 31, 0, 31, 0, 0}},      {'_', {0, 0, 0, 0, 0, 0, 31}},
    {'(', {2, 4, 8, 8, 8, 4, 2}},        {')', {8, 4, 2, 2, 2, 4, 8}},        {'%', {24, 25, 2, 4, 8, 19, 3}},
    {'/', {0, 1, 2, 4, 8, 16, 0}},       {' ', {0, 0, 0, 0, 0, 0, 0}},        {'?', {14, 17, 1, 2, 4, 0, 4}},
};

const Glyph& GlyphOf(char c) {
  const char upper = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
  for (const Glyph& g : kFont) {
    if (g.c == upper) return g;
  }
  return kFont[sizeof(kFont) / sizeof(kFont[0]) - 1];
}

void SetPixel(Image& canvas, int x, int y, const uint8_t colour[3]) {
  if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return;
  uint8_t* p = &canvas.pixels[(static_cast<size_t>(y) * canvas.width + x) * 3];
  p[0] = colour[0];
  p[1] = colour[1];
  p[2] = colour[2];
}

// The colour of a pixel with attribution v (in [-1, 1] signed, [0, 1]
// absolute) over an input pixel of `luminance` (0..255). Signed: red for
// positive, blue for negative, with opacity sqrt|v| over the input lightened
// to grey; absolute: black -> red -> yellow -> white, the input faintly under it.
void Overlay(double v, bool is_signed, double luminance, uint8_t out[3]) {
  double colour[3];
  double alpha = 0.0;
  double under = 0.0;
  if (is_signed) {
    colour[0] = v > 0 ? 230 : 30;
    colour[1] = 40;
    colour[2] = v > 0 ? 30 : 230;
    alpha = std::sqrt(std::fabs(v));
    under = 0.65 * 255.0 + 0.35 * luminance;
  } else {
    const double t = std::clamp(v, 0.0, 1.0) * 3.0;
    colour[0] = 255.0 * std::min(1.0, t);
    colour[1] = 255.0 * std::clamp(t - 1.0, 0.0, 1.0);
    colour[2] = 255.0 * std::clamp(t - 2.0, 0.0, 1.0);
    alpha = 0.8;
    under = luminance;
  }
  for (int c = 0; c < 3; ++c) out[c] = static_cast<uint8_t>(std::lround(alpha * colour[c] + (1.0 - alpha) * under));
}

std::string Short(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.3g", v);
  return buffer;
}

}  // namespace

int Predicted(const std::vector<double>& probabilities) {
  return static_cast<int>(std::max_element(probabilities.begin(), probabilities.end()) - probabilities.begin());
}

std::string EncodePrediction(const torch::Tensor& logits, const std::vector<double>& probabilities,
                             const std::vector<std::string>& classes) {
  const int predicted = Predicted(probabilities);
  nlohmann::json head = {{"predicted_class", predicted},
                         {"predicted_name", classes.at(static_cast<size_t>(predicted))},
                         {"probabilities", probabilities},
                         {"classes", classes}};
  std::string out = head.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out.pop_back();  // '}': the logits follow
  return out + ",\"output\":" + NestedOf(logits) + "}";
}

std::vector<double> Probabilities(const torch::Tensor& logits) {
  const torch::Tensor p = torch::softmax(logits.to(torch::kCPU).to(torch::kFloat64).reshape({-1}), 0).contiguous();
  return {p.data_ptr<double>(), p.data_ptr<double>() + p.numel()};
}

std::string EncodeNpz(const Explanation& e) {
  const Attribution& a = *e.attribution;
  ZipWriter zip;
  zip.Add("integrated_grads.npy", NpyOf(a.integrated_grads));
  zip.Add("integrated_directional_grads.npy", NpyOf(a.path_gradients));
  zip.Add("step_sizes.npy", NpyOf(a.step_sizes));
  zip.Add("intermediates.npy", NpyOf(a.path_points));
  zip.Add("output.npy", NpyOf(a.logits));
  zip.Add("input.npy", NpyOf(*e.input));
  if (!OnOriginalPath(a)) {
    zip.Add("path_inputs.npy", NpyOf(a.path_inputs));
    zip.Add("path_baselines.npy", NpyOf(a.baselines));
  }
  const int64_t target = a.target;
  zip.Add("target_class.npy", Npy("<i8", {}, &target, sizeof(target)));
  zip.Add("probabilities.npy", Npy("<f8", {static_cast<int64_t>(e.probabilities.size())}, e.probabilities.data(),
                                   e.probabilities.size() * 8));
  zip.Add("convergence_delta.npy", Npy("<f8", {}, &a.convergence_delta, sizeof(double)));
  return zip.Finish();
}

std::string EncodeJson(const Explanation& e) {
  const Attribution& a = *e.attribution;
  const int predicted = Predicted(e.probabilities);
  nlohmann::json head = {{"target_class", a.target},
                         {"target_name", e.classes->at(a.target)},
                         {"predicted_class", predicted},
                         {"predicted_name", e.classes->at(predicted)},
                         {"probabilities", e.probabilities},
                         {"classes", *e.classes},
                         {"convergence_delta", a.convergence_delta},
                         {"method", NameOf(e.method)},
                         {"n_steps", e.n_steps}};
  std::string out = head.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out.pop_back();  // '}': the arrays follow
  const bool original = OnOriginalPath(a);
  for (const auto& [name, tensor] :
       {std::pair<const char*, const torch::Tensor*>{"integrated_grads", &a.integrated_grads},
        {"integrated_directional_grads", &a.path_gradients},
        {"step_sizes", &a.step_sizes},
        {"intermediates", &a.path_points},
        {"output", &a.logits},
        {"input", e.input},
        {"path_inputs", &a.path_inputs},
        {"path_baselines", &a.baselines}}) {
    if (original && (tensor == &a.path_inputs || tensor == &a.baselines)) continue;
    out += ",\"";
    out += name;
    out += "\":";
    out += NestedOf(*tensor);
  }
  if (e.regions != nullptr) {
    out += ",\"regions\":";
    out += RegionsJson(*e.regions);
  }
  out += '}';
  return out;
}

void DrawText(Image& canvas, int x, int y, const std::string& text, int scale, const uint8_t colour[3]) {
  for (char c : text) {
    const Glyph& g = GlyphOf(c);
    for (int row = 0; row < 7; ++row) {
      for (int col = 0; col < 5; ++col) {
        if (((g.rows[row] >> (4 - col)) & 1) == 0) continue;
        for (int dy = 0; dy < scale; ++dy) {
          for (int dx = 0; dx < scale; ++dx) SetPixel(canvas, x + col * scale + dx, y + row * scale + dy, colour);
        }
      }
    }
    x += 6 * scale;
  }
}

StatusOr<std::string> EncodeHeatmapPng(const Explanation& e, const Image& input, const HeatmapStyle& style) {
  const Attribution& a = *e.attribution;
  const bool captum = style.sign != Sign::kNone;
  const bool is_signed = style.heatmap != Heatmap::kAbsolute;
  const torch::Tensor ig = a.integrated_grads.to(torch::kCPU).to(torch::kFloat64).reshape({3, -1});
  const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(ig.size(1)))));
  if (input.width != side || input.height != side || input.channels != 3) {
    return InvalidError("heatmap: the input is not the model's " + std::to_string(side) + " x " + std::to_string(side) +
                        " RGB");
  }
  // Per pixel, the sum over channels (as Captum's visualize_image_attr).
  // Our look scales by the 99th percentile of |value|, so that one outlier
  // cannot wash the map out; Captum's by its cumulative-sum threshold.
  const torch::Tensor summed = ig.sum(0).contiguous();
  std::vector<double> values(summed.data_ptr<double>(), summed.data_ptr<double>() + summed.numel());
  double scale = 0.0;
  std::vector<double> grey;
  if (captum) {
    values = NormalizeBySign(values, style.sign, style.outlier_perc, &scale);
    grey = GreyUnder(input.pixels);
  } else {
    if (!is_signed) {
      for (double& v : values) v = std::fabs(v);
    }
    std::vector<double> magnitude(values.size());
    std::transform(values.begin(), values.end(), magnitude.begin(), [](double v) { return std::fabs(v); });
    std::sort(magnitude.begin(), magnitude.end());
    scale = std::max(magnitude[static_cast<size_t>(0.99 * static_cast<double>(magnitude.size() - 1))], 1e-30);
    for (double& v : values) v = std::clamp(v / scale, -1.0, 1.0);
  }
  // Captum's blended_heat_map: the colour map at half opacity over the input in grey.
  auto captum_pixel = [&style](double normalized, double under, uint8_t out[3]) {
    const Rgb colour = CaptumColour(style.sign, ColourMapPosition(style.sign, normalized));
    for (int c = 0; c < 3; ++c) out[c] = static_cast<uint8_t>(std::lround(255.0 * (0.5 * colour[c] + 0.5 * under)));
  };

  const int zoom = std::max(1, 256 / side);
  const int panel = side * zoom;
  const int text = panel >= 256 ? 2 : 1;
  const int margin = 4;
  const int bar = 12;
  const int line = 9 * text;
  const int captions = captum ? 3 : 2;
  Image canvas;
  canvas.width = std::max(panel, 160) + 2 * margin;
  canvas.height = margin + panel + margin + bar + 2 + line + margin + captions * line + margin;
  canvas.channels = 3;
  canvas.pixels.assign(static_cast<size_t>(canvas.width) * canvas.height * 3, 255);
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      const size_t i = static_cast<size_t>(y) * side + x;
      uint8_t mixed[3];
      if (captum) {
        captum_pixel(values[i], grey[i], mixed);
      } else {
        // The input in grey, dimmed, under the attribution's colour with opacity |v|.
        const double luminance = 0.299 * input.at(y, x, 0) + 0.587 * input.at(y, x, 1) + 0.114 * input.at(y, x, 2);
        Overlay(values[i], is_signed, luminance, mixed);
      }
      for (int dy = 0; dy < zoom; ++dy) {
        for (int dx = 0; dx < zoom; ++dx) SetPixel(canvas, margin + x * zoom + dx, margin + y * zoom + dy, mixed);
      }
    }
  }
  // The colour scale and its ends (Captum's: the colour map itself, as its colour bar).
  const int bar_top = margin + panel + margin;
  const int bar_width = canvas.width - 2 * margin;
  for (int x = 0; x < bar_width; ++x) {
    const double t = static_cast<double>(x) / std::max(1, bar_width - 1);
    uint8_t mixed[3];
    if (captum) {
      const Rgb colour = CaptumColour(style.sign, t);
      for (int c = 0; c < 3; ++c) mixed[c] = static_cast<uint8_t>(std::lround(255.0 * colour[c]));
    } else {
      Overlay(is_signed ? 2.0 * t - 1.0 : t, is_signed, 255.0, mixed);
    }
    for (int y = 0; y < bar; ++y) SetPixel(canvas, margin + x, bar_top + y, mixed);
  }
  const uint8_t ink[3] = {20, 20, 20};
  const int labels = bar_top + bar + 2;
  const bool two_sided = captum ? style.sign == Sign::kAll : is_signed;
  const std::string low = two_sided ? Short(-scale) : "0";
  const std::string high = Short(scale);
  DrawText(canvas, margin, labels, low, text, ink);
  DrawText(canvas, canvas.width - margin - static_cast<int>(high.size()) * 6 * text, labels, high, text, ink);
  const int caption = labels + line + margin;
  const double probability = e.probabilities.empty() ? 0.0 : e.probabilities[a.target];
  DrawText(canvas, margin, caption, "class " + e.classes->at(a.target) + " p=" + Short(probability), text, ink);
  DrawText(canvas, margin, caption + line, "delta " + Short(a.convergence_delta), text, ink);
  if (captum) {
    DrawText(canvas, margin, caption + 2 * line, Name(style.sign) + " outliers " + Short(style.outlier_perc) + "%",
             text, ink);
  }
  return EncodePng(canvas);
}

StatusOr<std::string> EncodeRegionsPng(const Explanation& e, const Image& input, int top) {
  const Regions& r = *e.regions;
  const int side = r.side;
  if (input.width != side || input.height != side || input.channels != 3) {
    return InvalidError("regions: the input is not the model's " + std::to_string(side) + " x " + std::to_string(side) +
                        " RGB");
  }
  const std::vector<int> chosen = TopRegions(r, top);
  const int zoom = std::max(1, 256 / side);
  const int panel = side * zoom;
  const int text = panel >= 256 ? 2 : 1;
  const int margin = 4;
  const int line = 9 * text;
  Image canvas;
  canvas.width = std::max(panel, 160) + 2 * margin;
  canvas.height = margin + panel + margin + 3 * line + margin;
  canvas.channels = 3;
  canvas.pixels.assign(static_cast<size_t>(canvas.width) * canvas.height * 3, 255);
  // Which chosen region (by rank) holds each pixel: the first whose subtree
  // holds the pixel's smallest node.
  std::vector<int> rank(static_cast<size_t>(side) * side, -1);
  for (size_t i = 0; i < rank.size(); ++i) {
    for (int node = r.labels[i]; node > 0 && rank[i] < 0; node = r.nodes[static_cast<size_t>(node)].parent) {
      const auto found = std::find(chosen.begin(), chosen.end(), node);
      if (found != chosen.end()) rank[i] = static_cast<int>(found - chosen.begin());
    }
  }
  const uint8_t positive[3] = {20, 170, 60}, negative[3] = {200, 30, 170};
  auto colour_of = [&](int k) {
    return r.nodes[static_cast<size_t>(chosen[static_cast<size_t>(k)])].idg >= 0 ? positive : negative;
  };
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      const size_t i = static_cast<size_t>(y) * side + x;
      const double luminance = 0.299 * input.at(y, x, 0) + 0.587 * input.at(y, x, 1) + 0.114 * input.at(y, x, 2);
      uint8_t mixed[3];
      for (int c = 0; c < 3; ++c) {
        // The regions tinted over the image; the rest of the image faded.
        const double under = rank[i] >= 0 ? input.at(y, x, c) : 0.5 * 255.0 + 0.5 * luminance;
        const double tint = rank[i] >= 0 ? 0.35 : 0.0;
        mixed[c] =
            static_cast<uint8_t>(std::lround(rank[i] >= 0 ? tint * colour_of(rank[i])[c] + (1 - tint) * under : under));
      }
      for (int dy = 0; dy < zoom; ++dy) {
        for (int dx = 0; dx < zoom; ++dx) SetPixel(canvas, margin + x * zoom + dx, margin + y * zoom + dy, mixed);
      }
    }
  }
  // Outlines where a pixel's rank differs from its neighbour's, and the ranks.
  const int thick = std::max(1, zoom / 8);
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      const int k = rank[static_cast<size_t>(y) * side + x];
      if (k < 0) continue;
      const int ys[4] = {y - 1, y + 1, y, y}, xs[4] = {x, x, x - 1, x + 1};
      for (int d = 0; d < 4; ++d) {
        const bool edge = ys[d] < 0 || xs[d] < 0 || ys[d] >= side || xs[d] >= side ||
                          rank[static_cast<size_t>(ys[d]) * side + xs[d]] != k;
        if (!edge) continue;
        for (int t = 0; t < zoom; ++t) {
          for (int w = 0; w < thick; ++w) {
            const int px = margin + x * zoom + (d == 2 ? w : d == 3 ? zoom - 1 - w : t);
            const int py = margin + y * zoom + (d == 0 ? w : d == 1 ? zoom - 1 - w : t);
            SetPixel(canvas, px, py, colour_of(k));
          }
        }
      }
    }
  }
  for (size_t k = 0; k < chosen.size(); ++k) {
    const RegionNode& n = r.nodes[static_cast<size_t>(chosen[k])];
    DrawText(canvas, margin + n.left * zoom + 2 * thick + 1, margin + n.top * zoom + 2 * thick + 1,
             std::to_string(k + 1), text, colour_of(static_cast<int>(k)));
  }
  const uint8_t ink[3] = {20, 20, 20};
  const Attribution& a = *e.attribution;
  const int caption = margin + panel + margin;
  const double probability = e.probabilities.empty() ? 0.0 : e.probabilities[a.target];
  DrawText(canvas, margin, caption, "class " + e.classes->at(a.target) + " p=" + Short(probability), text, ink);
  DrawText(canvas, margin, caption + line, "idg " + Name(r.kind) + " top " + std::to_string(chosen.size()), text, ink);
  // The dividends as shares of Z, as many as fit.
  const size_t fits = static_cast<size_t>((canvas.width - 2 * margin) / (6 * text));
  std::string shares;
  for (size_t k = 0; k < chosen.size(); ++k) {
    const std::string item = (k ? " " : "") + std::to_string(k + 1) + ":" +
                             Short(100.0 * r.nodes[static_cast<size_t>(chosen[k])].dividend) + "%";
    if (shares.size() + item.size() > fits) break;
    shares += item;
  }
  DrawText(canvas, margin, caption + 2 * line, shares, text, ink);
  return EncodePng(canvas);
}

namespace {

StatusOr<std::string> GzipEncoder(const Explanation& e, const EncodeOptions& options) {
  const std::string saved = EncodeAttribution(*e.attribution);
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::string compressed, GzipCompress(saved, options.gzip_level));
  if (options.compress_seconds != nullptr) {
    *options.compress_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return compressed;
}
StatusOr<std::string> NpzEncoder(const Explanation& e, const EncodeOptions& /*options*/) { return EncodeNpz(e); }
StatusOr<std::string> JsonEncoder(const Explanation& e, const EncodeOptions& /*options*/) { return EncodeJson(e); }
StatusOr<std::string> PngEncoder(const Explanation& e, const EncodeOptions& options) {
  if (options.seen == nullptr) return InternalError("png: the image the model saw is not given");
  if (e.regions != nullptr) return EncodeRegionsPng(e, *options.seen, options.top_regions);
  return EncodeHeatmapPng(e, *options.seen, options.style);
}

constexpr std::array<Encoder, Words<Format>::kNames.size()> kEncoders = {GzipEncoder, NpzEncoder, JsonEncoder,
                                                                         PngEncoder};

}  // namespace

Encoder EncoderOf(Format format) { return kEncoders[static_cast<size_t>(format)]; }

}  // namespace intgrads
