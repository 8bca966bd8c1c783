// Labelled image sets for training and evaluation: a zip whose members are
// <split>/<class>/<image> (CIFAR-10 as ../shared/data/cifar10 holds it), or a
// folder tree <split>/<class>/<image> or <class>/<image>. The class of an
// image is the name of its folder; PNG and JPEG are read.
//
//   ASSIGN_OR_RETURN(LabeledImages set, LoadLabeledImages("train.zip", DefaultClassNames(10), 32));
#pragma once

#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "common/image.h"
#include "common/status.h"

namespace intgrads {

struct LabeledImages {
  torch::Tensor images;  // N x size x size x 3, uint8 RGB
  torch::Tensor labels;  // N, int64 indices into the class list
};

struct DatasetOptions {
  int size = 32;         // images of another size are resized (Pillow-exact bilinear)
  size_t per_class = 0;  // read at most this many images of each class (0: all)
  std::function<void(size_t done, size_t total)> progress;  // called while decoding
};

// Every image whose folder is one of `classes`; a folder of another name is an
// error (it would otherwise be silently left out of an accuracy).
StatusOr<LabeledImages> LoadLabeledImages(const std::string& path, const std::vector<std::string>& classes,
                                          const DatasetOptions& options);

// N x S x S x 3 uint8 -> N x 3 x S x S floats, (pixel / 255 - mean) / std, as
// the service preprocesses an image of the model's size.
torch::Tensor NormalizeImages(const torch::Tensor& images, const Normalization& norm);

}  // namespace intgrads
