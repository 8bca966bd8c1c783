// Captum's conventions for pictures of an attribution
// (captum.attr.visualization.visualize_image_attr), for the PNG heatmap:
// the attribution summed over channels, kept by `sign`, divided by the
// cumulative-sum threshold of `outlier_perc` and clipped, then coloured by
// the colour map Captum picks for that sign (matplotlib's, 256 entries) and
// blended half and half over the input in grey (its blended_heat_map).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/vocabulary.h"

namespace intgrads {

// The value at which the running sum of `values` sorted ascending first
// reaches `percentile` percent of their total (Captum's
// _cumulative_sum_threshold); 0 for no values.
double CumulativeSumThreshold(std::vector<double> values, double percentile);

// The attribution of each pixel scaled as Captum's _normalize_attr: in
// [-1, 1] for sign all, [0, 1] for the others (negative: the magnitude
// of the negative part). `scale` gets the threshold divided by (negative
// for sign negative, as Captum's).
std::vector<double> NormalizeBySign(const std::vector<double>& per_pixel, Sign sign, double outlier_perc,
                                    double* scale);

using Rgb = std::array<double, 3>;  // 0..1

// The colour map Captum uses for a sign: RdWhGn (red, white, green) for
// "all", matplotlib's Greens, Reds and Blues for positive, negative and
// absolute_value; `t` in [0, 1] as matplotlib looks it up (a table of 256
// colours, entry min(floor(256 t), 255)).
Rgb CaptumColour(Sign sign, double t);

// Where a normalized value sits on the colour map: (v + 1) / 2 for "all", v otherwise.
double ColourMapPosition(Sign sign, double normalized);

// The input in grey as blended_heat_map draws it: each pixel's channel
// mean, scaled from the image's darkest to its lightest (imshow's gray map,
// 256 entries); `rgb` is HWC.
std::vector<double> GreyUnder(const std::vector<uint8_t>& rgb);

}  // namespace intgrads
