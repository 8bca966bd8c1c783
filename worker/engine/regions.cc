#include "worker/engine/regions.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

namespace intgrads {

namespace {

struct Rect {
  int top, left, height, width;
};

// Adds the quadtree node for `rect` under `parent` and its sub-patches:
// a patch whose longer side exceeds min_side splits in half along each side
// longer than 1; a one-pixel part is a pixel, not a node.
void AddPatch(Regions* regions, const Rect& rect, int parent, int min_side) {
  const int id = static_cast<int>(regions->nodes.size());
  RegionNode node;
  node.parent = parent;
  node.top = rect.top;
  node.left = rect.left;
  node.height = rect.height;
  node.width = rect.width;
  node.pixels = int64_t{rect.height} * rect.width;
  regions->nodes.push_back(node);
  if (parent >= 0) regions->nodes[static_cast<size_t>(parent)].children.push_back(id);
  for (int y = rect.top; y < rect.top + rect.height; ++y) {
    for (int x = rect.left; x < rect.left + rect.width; ++x) {
      regions->labels[static_cast<size_t>(y) * regions->side + x] = id;
    }
  }
  if (std::max(rect.height, rect.width) <= min_side) return;
  const int h1 = rect.height > 1 ? rect.height / 2 : rect.height;
  const int w1 = rect.width > 1 ? rect.width / 2 : rect.width;
  for (const Rect& part : {Rect{rect.top, rect.left, h1, w1}, Rect{rect.top, rect.left + w1, h1, rect.width - w1},
                           Rect{rect.top + h1, rect.left, rect.height - h1, w1},
                           Rect{rect.top + h1, rect.left + w1, rect.height - h1, rect.width - w1}}) {
    if (part.height * part.width > 1) AddPatch(regions, part, id, min_side);
  }
}

// Splits every label of `labels` (side x side) into its 4-connected
// components; returns the new count.
int ConnectedComponents(std::vector<int>* labels, int side) {
  std::vector<int> out(labels->size(), -1);
  int count = 0;
  std::vector<int> stack;
  for (size_t start = 0; start < labels->size(); ++start) {
    if (out[start] >= 0) continue;
    const int label = (*labels)[start];
    out[start] = count;
    stack.assign(1, static_cast<int>(start));
    while (!stack.empty()) {
      const int p = stack.back();
      stack.pop_back();
      const int y = p / side, x = p % side;
      const int neighbours[4][2] = {{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}};
      for (const auto& [ny, nx] : neighbours) {
        if (ny < 0 || nx < 0 || ny >= side || nx >= side) continue;
        const size_t q = static_cast<size_t>(ny) * side + nx;
        if (out[q] < 0 && (*labels)[q] == label) {
          out[q] = count;
          stack.push_back(static_cast<int>(q));
        }
      }
    }
    ++count;
  }
  *labels = std::move(out);
  return count;
}

}  // namespace

std::vector<int> Superpixels(const Image& rgb, int count) {
  const int side = rgb.width;
  const int grid = std::max(1, static_cast<int>(std::lround(std::sqrt(static_cast<double>(count)))));
  const double step = static_cast<double>(side) / grid;
  constexpr double kCompactness = 40.0;  // colour units (0..255) per grid step
  struct Centre {
    double y, x, r, g, b;
  };
  std::vector<Centre> centres;
  for (int i = 0; i < grid; ++i) {
    for (int j = 0; j < grid; ++j) {
      const double y = (i + 0.5) * step, x = (j + 0.5) * step;
      const int py = std::min(side - 1, static_cast<int>(y)), px = std::min(side - 1, static_cast<int>(x));
      centres.push_back({y, x, static_cast<double>(rgb.at(py, px, 0)), static_cast<double>(rgb.at(py, px, 1)),
                         static_cast<double>(rgb.at(py, px, 2))});
    }
  }
  std::vector<int> labels(static_cast<size_t>(side) * side, 0);
  for (int iteration = 0; iteration < 10; ++iteration) {
    for (int y = 0; y < side; ++y) {
      for (int x = 0; x < side; ++x) {
        double best = 1e300;
        for (size_t c = 0; c < centres.size(); ++c) {
          const Centre& k = centres[c];
          const double dr = rgb.at(y, x, 0) - k.r, dg = rgb.at(y, x, 1) - k.g, db = rgb.at(y, x, 2) - k.b;
          const double dy = (y + 0.5 - k.y) / step, dx = (x + 0.5 - k.x) / step;
          const double d = dr * dr + dg * dg + db * db + kCompactness * kCompactness * (dy * dy + dx * dx);
          if (d < best) {
            best = d;
            labels[static_cast<size_t>(y) * side + x] = static_cast<int>(c);
          }
        }
      }
    }
    std::vector<Centre> sums(centres.size(), Centre{0, 0, 0, 0, 0});
    std::vector<int> members(centres.size(), 0);
    for (int y = 0; y < side; ++y) {
      for (int x = 0; x < side; ++x) {
        const auto c = static_cast<size_t>(labels[static_cast<size_t>(y) * side + x]);
        sums[c].y += y + 0.5;
        sums[c].x += x + 0.5;
        sums[c].r += rgb.at(y, x, 0);
        sums[c].g += rgb.at(y, x, 1);
        sums[c].b += rgb.at(y, x, 2);
        ++members[c];
      }
    }
    for (size_t c = 0; c < centres.size(); ++c) {
      if (members[c] == 0) continue;
      const double m = members[c];
      centres[c] = {sums[c].y / m, sums[c].x / m, sums[c].r / m, sums[c].g / m, sums[c].b / m};
    }
  }
  // As SLIC's own post-processing: a fragment under a quarter of a segment's
  // expected size joins the neighbour it touches first, then labels are
  // renumbered 0..K-1.
  const int components = ConnectedComponents(&labels, side);
  std::vector<int> sizes(static_cast<size_t>(components), 0);
  for (int l : labels) ++sizes[static_cast<size_t>(l)];
  const double smallest = 0.25 * side * side / std::max(1, grid * grid);
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto l = static_cast<size_t>(labels[i]);
    if (sizes[l] >= smallest) continue;
    const int y = static_cast<int>(i) / side, x = static_cast<int>(i) % side;
    const int neighbours[4][2] = {{y - 1, x}, {y, x - 1}, {y + 1, x}, {y, x + 1}};
    for (const auto& [ny, nx] : neighbours) {
      if (ny < 0 || nx < 0 || ny >= side || nx >= side) continue;
      const int other = labels[static_cast<size_t>(ny) * side + nx];
      if (other == labels[i]) continue;
      for (int& m : labels) {
        if (m == static_cast<int>(l)) m = other;  // the whole fragment at once
      }
      sizes[static_cast<size_t>(other)] += sizes[l];
      sizes[l] = 0;
      break;
    }
  }
  std::vector<int> renumber(static_cast<size_t>(components), -1);
  int next = 0;
  for (int& l : labels) {
    if (renumber[static_cast<size_t>(l)] < 0) renumber[static_cast<size_t>(l)] = next++;
    l = renumber[static_cast<size_t>(l)];
  }
  return labels;
}

StatusOr<Regions> ComputeRegions(const Attribution& a, const RegionRequest& request, const Image& seen) {
  const torch::Tensor inputs = a.path_inputs.to(torch::kCPU).to(torch::kFloat64);
  const torch::Tensor z = inputs - a.baselines.to(torch::kCPU).to(torch::kFloat64);  // P x 3 x S x S
  const int64_t paths = z.size(0);
  const int side = static_cast<int>(z.size(3));
  if (z.size(2) != side || seen.width != side || seen.height != side) {
    return InvalidError("regions: the attribution is not over the model's square input");
  }
  // G_p = sum_k s_k grad_k (step_sizes hold s_k / P).
  const torch::Tensor steps =
      a.step_sizes.to(torch::kCPU).to(torch::kFloat64).view({paths, -1, 1, 1, 1}) * static_cast<double>(paths);
  const torch::Tensor grads = a.path_gradients.to(torch::kCPU).to(torch::kFloat64).view({paths, -1, 3, side, side});
  const torch::Tensor g = (grads * steps).sum(1);                                // P x 3 x S x S
  const torch::Tensor dot = (g * z).sum(1).contiguous();                         // P x S x S
  const torch::Tensor square = (z * z).sum(1).contiguous();                      // P x S x S
  const torch::Tensor sign = z.ge(0).to(torch::kFloat64) * 2.0 - 1.0;            // sign(z), +1 at 0
  const torch::Tensor feature_idg = (g * sign).mean(0);                          // 3 x S x S
  const torch::Tensor feature_dividend = feature_idg.abs().sum(0).contiguous();  // S x S, summed over channels
  const torch::Tensor norm = square.sqrt();
  const torch::Tensor pixel_idg = (dot / norm.clamp_min(1e-300) * square.gt(0)).mean(0).contiguous();

  Regions regions;
  regions.kind = request.kind;
  regions.side = side;
  regions.labels.assign(static_cast<size_t>(side) * side, 0);
  if (request.kind == RegionKind::kSuperpixels) {
    RegionNode image;
    image.height = image.width = side;
    image.pixels = int64_t{side} * side;
    regions.nodes.push_back(image);
    std::vector<int> segments = Superpixels(seen, request.segments);
    const int count = *std::max_element(segments.begin(), segments.end()) + 1;
    for (int s = 0; s < count; ++s) {
      RegionNode node;
      node.parent = 0;
      node.top = node.left = side;
      regions.nodes[0].children.push_back(static_cast<int>(regions.nodes.size()));
      regions.nodes.push_back(node);
    }
    for (int y = 0; y < side; ++y) {
      for (int x = 0; x < side; ++x) {
        const int id = 1 + segments[static_cast<size_t>(y) * side + x];
        RegionNode& n = regions.nodes[static_cast<size_t>(id)];
        // height and width hold the bottom and right edges until the end.
        n.top = std::min(n.top, y);
        n.left = std::min(n.left, x);
        n.height = std::max(n.height, y + 1);
        n.width = std::max(n.width, x + 1);
        ++n.pixels;
        regions.labels[static_cast<size_t>(y) * side + x] = id;
      }
    }
    for (size_t i = 1; i < regions.nodes.size(); ++i) {
      regions.nodes[i].height -= regions.nodes[i].top;
      regions.nodes[i].width -= regions.nodes[i].left;
    }
  } else {
    AddPatch(&regions, {0, 0, side, side}, -1, request.min_side);
  }

  // Per node and path: sum of IG (dot) and of z^2 over the node, from its own
  // pixels up through its ancestors (children come after parents).
  const size_t nodes = regions.nodes.size();
  std::vector<double> dots(nodes * static_cast<size_t>(paths), 0.0), squares(dots.size(), 0.0);
  const double* dot_data = dot.data_ptr<double>();
  const double* square_data = square.data_ptr<double>();
  const size_t area = static_cast<size_t>(side) * side;
  for (size_t p = 0; p < static_cast<size_t>(paths); ++p) {
    for (size_t i = 0; i < area; ++i) {
      const auto n = static_cast<size_t>(regions.labels[i]);
      dots[n * paths + p] += dot_data[p * area + i];
      squares[n * paths + p] += square_data[p * area + i];
    }
  }
  for (size_t n = nodes; n-- > 1;) {
    const auto parent = static_cast<size_t>(regions.nodes[n].parent);
    for (size_t p = 0; p < static_cast<size_t>(paths); ++p) {
      dots[parent * paths + p] += dots[n * paths + p];
      squares[parent * paths + p] += squares[n * paths + p];
    }
  }
  double z_total = feature_dividend.sum().item<double>() + pixel_idg.abs().sum().item<double>();
  for (size_t n = 0; n < nodes; ++n) {
    double idg = 0.0;
    for (size_t p = 0; p < static_cast<size_t>(paths); ++p) {
      const double s = squares[n * paths + p];
      if (s > 0.0) idg += dots[n * paths + p] / std::sqrt(s);
    }
    regions.nodes[n].idg = idg / static_cast<double>(paths);
    z_total += std::fabs(regions.nodes[n].idg);
  }
  regions.normalizer = z_total;
  const double scale = z_total > 0.0 ? 1.0 / z_total : 0.0;
  regions.pixel_idg.assign(pixel_idg.data_ptr<double>(), pixel_idg.data_ptr<double>() + area);
  regions.pixel_value.resize(area);
  const double* features = feature_dividend.data_ptr<double>();
  for (size_t i = 0; i < area; ++i) {
    regions.pixel_value[i] = (std::fabs(regions.pixel_idg[i]) + features[i]) * scale;
    regions.nodes[static_cast<size_t>(regions.labels[i])].value += regions.pixel_value[i];
  }
  for (size_t n = nodes; n-- > 0;) {
    RegionNode& node = regions.nodes[n];
    node.dividend = std::fabs(node.idg) * scale;
    node.value += node.dividend;
    if (node.parent >= 0) regions.nodes[static_cast<size_t>(node.parent)].value += node.value;
  }
  return regions;
}

std::vector<int> TopRegions(const Regions& regions, int count) {
  std::vector<int> order(regions.nodes.empty() ? 0 : regions.nodes.size() - 1);
  std::iota(order.begin(), order.end(), 1);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return regions.nodes[static_cast<size_t>(a)].dividend > regions.nodes[static_cast<size_t>(b)].dividend;
  });
  if (order.size() > static_cast<size_t>(count)) order.resize(static_cast<size_t>(count));
  return order;
}

std::string RegionsJson(const Regions& r) {
  using nlohmann::json;
  json nodes = json::array();
  for (size_t i = 0; i < r.nodes.size(); ++i) {
    const RegionNode& n = r.nodes[i];
    nodes.push_back({{"id", i},
                     {"parent", n.parent},
                     {"children", n.children},
                     {"box", {n.top, n.left, n.height, n.width}},
                     {"pixels", n.pixels},
                     {"idg", n.idg},
                     {"dividend", n.dividend},
                     {"value", n.value}});
  }
  auto grid = [&r](const auto& values) {
    json rows = json::array();
    for (int y = 0; y < r.side; ++y) {
      rows.push_back(json(std::vector<std::decay_t<decltype(values[0])>>(
          values.begin() + static_cast<std::ptrdiff_t>(y) * r.side,
          values.begin() + static_cast<std::ptrdiff_t>(y + 1) * r.side)));
    }
    return rows;
  };
  return json{{"kind", Name(r.kind)},     {"normalizer", r.normalizer},     {"nodes", nodes},
              {"labels", grid(r.labels)}, {"pixel_idg", grid(r.pixel_idg)}, {"pixel_value", grid(r.pixel_value)}}
      .dump();
}

}  // namespace intgrads
