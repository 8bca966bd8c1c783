// Integrated Directional Gradients for image regions (Sikdar, Bhattacharya
// and Heese, ACL 2021), from the per-step gradients an attribution already
// holds: no forward or backward pass of its own.
//
// For a set S of input values, with z = x - b (zero outside S: z_S) on a
// path from b to x, IDG(S) is the integral over the path of the gradient's
// component along z_S / |z_S|. With the schedule's points a_k and weights s_k
// (the same ones IG uses, whatever the method):
//
//   IDG(S) = sum_k s_k grad f(b + a_k z) . z_S / |z_S|
//          = sum over i in S of IG_i / |z_S|           (IG_i = z_i sum_k s_k grad_k,i)
//
// With several paths (baselines, SmoothGrad samples), IDG(S) is the mean of
// the paths' IDGs. A set with |z_S| = 0 has no direction: IDG 0. A single
// input value i has the unit direction sign(z_i) (+1 when z_i = 0), so
// |IDG({i})| = |sum_k s_k grad_k,i|, as the public code's feature dividends.
//
// The meaningful sets M form a hierarchy: the image; its regions (a quadtree
// of patches, split while a side exceeds min_side, or SLIC superpixels); the
// pixels (3 values each); the single values. The dividend of S in M is
// d(S) = |IDG(S)| / Z, Z the sum of |IDG| over all of M, and the value of S
// is v(S) = the sum of d(T) over the T in M within S (so v(image) = 1).
// The paper's code averages the gradients over the steps (uniform weights);
// here the schedule's weights s_k enter, which is the same integral and
// equals that mean for Riemann rules.
#pragma once

#include <string>
#include <vector>

#include "common/image.h"
#include "common/request.h"
#include "common/status.h"
#include "worker/engine/engine.h"

namespace intgrads {

struct RegionNode {
  int parent = -1;  // -1 for the image
  std::vector<int> children;
  int top = 0, left = 0, height = 0, width = 0;  // bounding box, in model-input pixels
  int64_t pixels = 0;
  double idg = 0.0;
  double dividend = 0.0;
  double value = 0.0;
};

struct Regions {
  RegionKind kind = RegionKind::kQuadtree;
  std::vector<RegionNode> nodes;  // nodes[0] is the whole image; a parent comes before its children
  std::vector<int> labels;        // S x S, row-major: the smallest node that holds each pixel
  std::vector<double> pixel_idg;  // S x S: IDG of each pixel (its 3 values)
  std::vector<double> pixel_value;
  int side = 0;
  double normalizer = 0.0;  // Z
};

// The hierarchy `request` asks for over an attribution at the model's input
// size; `seen` is the RGB image the model saw (superpixels are cut from it).
StatusOr<Regions> ComputeRegions(const Attribution& attribution, const RegionRequest& request, const Image& seen);

// SLIC (Achanta et al. 2012) on RGB: about `count` compact segments, each
// split into its connected components. S x S labels 0..K-1, row-major.
std::vector<int> Superpixels(const Image& rgb, int count);

// The `count` regions with the largest dividends, the image itself excluded.
std::vector<int> TopRegions(const Regions& regions, int count);

// {"kind", "normalizer", "nodes": [{"id", "parent", "children", "box":
// [top, left, height, width], "pixels", "idg", "dividend", "value"}],
// "labels", "pixel_idg", "pixel_value"} (maps as S x S nested lists).
std::string RegionsJson(const Regions& regions);

}  // namespace intgrads
