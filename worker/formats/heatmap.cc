#include "worker/formats/heatmap.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace intgrads {

namespace {

// Matplotlib's colour map table: `anchors` evenly spaced over [0, 1],
// linearly interpolated at k / 255 for k = 0..255.
std::array<Rgb, 256> Table(const std::vector<Rgb>& anchors) {
  std::array<Rgb, 256> table{};
  const double segments = static_cast<double>(anchors.size() - 1);
  for (int k = 0; k < 256; ++k) {
    const double x = static_cast<double>(k) / 255.0 * segments;
    const auto i = std::min(static_cast<size_t>(x), anchors.size() - 2);
    const double f = x - static_cast<double>(i);
    for (int c = 0; c < 3; ++c) table[k][c] = anchors[i][c] + f * (anchors[i + 1][c] - anchors[i][c]);
  }
  return table;
}

Rgb Hex(uint32_t rgb) {
  return {static_cast<double>((rgb >> 16) & 0xFF) / 255.0, static_cast<double>((rgb >> 8) & 0xFF) / 255.0,
          static_cast<double>(rgb & 0xFF) / 255.0};
}

std::vector<Rgb> Hexes(std::initializer_list<uint32_t> colours) {
  std::vector<Rgb> out;
  for (uint32_t c : colours) out.push_back(Hex(c));
  return out;
}

// ColorBrewer's nine-class sequential schemes, as matplotlib's Greens, Reds and Blues.
const std::array<Rgb, 256>& TableOf(Sign sign) {
  static const std::array<Rgb, 256> all = Table(Hexes({0xFF0000, 0xFFFFFF, 0x008000}));
  static const std::array<Rgb, 256> greens =
      Table(Hexes({0xF7FCF5, 0xE5F5E0, 0xC7E9C0, 0xA1D99B, 0x74C476, 0x41AB5D, 0x238B45, 0x006D2C, 0x00441B}));
  static const std::array<Rgb, 256> reds =
      Table(Hexes({0xFFF5F0, 0xFEE0D2, 0xFCBBA1, 0xFC9272, 0xFB6A4A, 0xEF3B2C, 0xCB181D, 0xA50F15, 0x67000D}));
  static const std::array<Rgb, 256> blues =
      Table(Hexes({0xF7FBFF, 0xDEEBF7, 0xC6DBEF, 0x9ECAE1, 0x6BAED6, 0x4292C6, 0x2171B5, 0x08519C, 0x08306B}));
  if (sign == Sign::kPositive) return greens;
  if (sign == Sign::kNegative) return reds;
  if (sign == Sign::kAbsoluteValue) return blues;
  return all;
}

// Matplotlib's lookup: entry floor(256 t), the last for t = 1.
int Entry(double t) {
  if (!(t > 0.0)) return 0;
  return std::min(static_cast<int>(t * 256.0), 255);
}

}  // namespace

double CumulativeSumThreshold(std::vector<double> values, double percentile) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double total = std::accumulate(values.begin(), values.end(), 0.0);
  const double wanted = total * 0.01 * percentile;
  double running = 0.0;
  for (double v : values) {
    running += v;
    if (running >= wanted) return v;
  }
  return values.back();
}

std::vector<double> NormalizeBySign(const std::vector<double>& per_pixel, Sign sign, double outlier_perc,
                                    double* scale) {
  std::vector<double> kept(per_pixel.size());
  std::vector<double> magnitude(per_pixel.size());
  for (size_t i = 0; i < per_pixel.size(); ++i) {
    const double v = per_pixel[i];
    if (sign == Sign::kPositive) {
      kept[i] = v > 0 ? v : 0.0;
    } else if (sign == Sign::kNegative) {
      kept[i] = v < 0 ? v : 0.0;
    } else if (sign == Sign::kAbsoluteValue) {
      kept[i] = std::fabs(v);
    } else {
      kept[i] = v;
    }
    magnitude[i] = std::fabs(kept[i]);
  }
  double threshold = CumulativeSumThreshold(magnitude, 100.0 - outlier_perc);
  if (sign == Sign::kNegative) threshold = -threshold;
  *scale = threshold;
  std::vector<double> out(per_pixel.size(), 0.0);
  if (threshold == 0.0) return out;  // no attribution of that sign: nothing to colour
  for (size_t i = 0; i < out.size(); ++i) out[i] = std::clamp(kept[i] / threshold, -1.0, 1.0);
  return out;
}

Rgb CaptumColour(Sign sign, double t) { return TableOf(sign)[static_cast<size_t>(Entry(t))]; }

double ColourMapPosition(Sign sign, double normalized) {
  return sign == Sign::kAll ? (normalized + 1.0) / 2.0 : normalized;
}

std::vector<double> GreyUnder(const std::vector<uint8_t>& rgb) {
  std::vector<double> mean(rgb.size() / 3);
  for (size_t i = 0; i < mean.size(); ++i) mean[i] = (rgb[i * 3] + rgb[i * 3 + 1] + rgb[i * 3 + 2]) / 3.0;
  if (mean.empty()) return mean;
  const auto [low, high] = std::minmax_element(mean.begin(), mean.end());
  const double lo = *low;
  const double range = *high - lo;
  for (double& m : mean) m = range > 0 ? Entry((m - lo) / range) / 255.0 : 0.0;
  return mean;
}

}  // namespace intgrads
