// Training runs on the CPU with fixed seeds: the split, the initial weights,
// the order of batches and the augmentation (random crops of the image padded
// by 4 pixels, horizontal flips) all come from --seed. SGD with Nesterov
// momentum, one-cycle learning rate (linear warm-up over the first 15% of the
// steps, then linear decay to 0), label smoothing 0.1.
#include "tools/train.h"

#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>

#include "common/torchio/torch_file.h"
#include "tools/cli.h"
#include "tools/dataset.h"
#include "worker/models/model.h"
#include "worker/serving/model_flags.h"

namespace intgrads {
namespace {

std::string Duration(double seconds) {
  const long s = std::lround(seconds);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof text, "%ldh%02ldm", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(text, sizeof text, "%ldm%02lds", s / 60, s % 60);
  }
  return text;
}

// One line of progress on stderr, redrawn in place on a terminal and printed
// every 10% otherwise (logs, CI).
class Progress {
 public:
  explicit Progress(std::string label) : label_(std::move(label)), tty_(isatty(STDERR_FILENO) != 0) {}
  void Update(size_t done, size_t total, const std::string& detail = "") {
    const int percent = total ? static_cast<int>(100 * done / total) : 100;
    if (!tty_ && percent / 10 == last_decile_ && done != total) return;
    last_decile_ = percent / 10;
    const double elapsed = Seconds();
    const double left = done ? elapsed * static_cast<double>(total - done) / static_cast<double>(done) : 0.0;
    std::string bar(20, '.');
    std::fill_n(bar.begin(), percent / 5, '#');
    std::fprintf(stderr, "%s%s [%s] %3d%% %zu/%zu%s%s, %s elapsed, %s left%s", tty_ ? "\r" : "", label_.c_str(),
                 bar.c_str(), percent, done, total, detail.empty() ? "" : " ", detail.c_str(),
                 Duration(elapsed).c_str(), Duration(left).c_str(), tty_ && done != total ? "\033[K" : "\n");
    if (tty_ && done == total) std::fprintf(stderr, "\n");
  }
  double Seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::string label_;
  bool tty_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Top-1 predictions of `model` for normalized inputs, in batches.
torch::Tensor Predict(const Classifier& model, const torch::Tensor& inputs, int64_t batch_size, Progress* progress) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> predictions;
  const int64_t n = inputs.size(0);
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t count = std::min(batch_size, n - begin);
    predictions.push_back(model.Forward(inputs.narrow(0, begin, count).to(model.dtype())).argmax(1));
    if (progress) progress->Update(static_cast<size_t>(begin + count), static_cast<size_t>(n));
  }
  return torch::cat(predictions);
}

struct TrainOptions {
  std::string data, output;
  LanetConfig lanet{16, 8, false, 10};
  int epochs = 10;
  int64_t batch_size = 128;
  double lr = 0.1;
  double weight_decay = 5e-4;
  double label_smoothing = 0.1;
  int64_t validation = 5000;
  size_t per_class = 0;
  uint64_t seed = 0;
};

const char kTrainHelp[] =
    "usage: intgrads-images train --data train.zip --output model.pth [options]\n\n"
    "Trains a LaNet (NetworkCIFAR with the LaNAS cell, no auxiliary head) on a CIFAR-style zip or\n"
    "folder tree (<split>/<class>/<image>) on the CPU, holding out --validation images, and writes\n"
    "its state dict with torch.save's format (serve it with -lb PATH). Fixed seeds: the same command\n"
    "gives the same weights on the same machine and thread count.\n\n"
    "  --data PATH          training images (e.g. ../shared/data/cifar10/train.zip)\n"
    "  --output PATH        where to write the checkpoint\n"
    "  --channels C         initial channels (default 16)\n"
    "  --layers L           cells (default 8)\n"
    "  --epochs N           (default 10)\n"
    "  --batch-size N       (default 128)\n"
    "  --lr X               peak learning rate of the one-cycle schedule (default 0.1)\n"
    "  --weight-decay X     (default 5e-4)\n"
    "  --validation N       images held out for validation (default 5000)\n"
    "  --per-class N        read only N images of each class (quick runs)\n"
    "  --seed N             (default 0)\n"
    "  --threads N          intra-op threads (default: torch's choice)\n";

}  // namespace

int RunTrain(const std::vector<std::string>& args) {
  TrainOptions o;
  FlagReader reader;
  reader.program = "intgrads-images: train";
  reader.print_help = [] { std::printf("%s", kTrainHelp); };
  reader.set = [&o](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (a == "--data")
      o.data = v;
    else if (a == "--output")
      o.output = v;
    else if (a == "--channels")
      o.lanet.channels = std::stoi(v);
    else if (a == "--layers")
      o.lanet.layers = std::stoi(v);
    else if (a == "--epochs")
      o.epochs = std::stoi(v);
    else if (a == "--batch-size")
      o.batch_size = std::stoll(v);
    else if (a == "--lr")
      o.lr = std::stod(v);
    else if (a == "--weight-decay")
      o.weight_decay = std::stod(v);
    else if (a == "--validation")
      o.validation = std::stoll(v);
    else if (a == "--per-class")
      o.per_class = std::stoul(v);
    else if (a == "--seed")
      o.seed = std::stoull(v);
    else if (a == "--threads")
      torch::set_num_threads(std::stoi(v));
    else
      return false;
    return true;
  };
  if (auto exit = ReadFlags(reader, args)) return *exit;
  if (o.data.empty() || o.output.empty()) return Fail("train: --data and --output are required (see --help)");
  if (o.lanet.channels < 2 || o.lanet.channels % 2 || o.lanet.layers < 3 || o.epochs < 1 || o.batch_size < 2) {
    return Fail("train: need an even --channels >= 2, --layers >= 3, --epochs >= 1 and --batch-size >= 2");
  }

  const std::vector<std::string> classes = DefaultClassNames(o.lanet.num_classes);
  Progress reading("reading " + o.data);
  DatasetOptions dataset_options;
  dataset_options.per_class = o.per_class;
  dataset_options.progress = [&reading](size_t done, size_t total) { reading.Update(done, total); };
  auto set = LoadLabeledImages(o.data, classes, dataset_options);
  if (!set.ok()) return Fail("train: " + set.status().message());
  const int64_t n = set->images.size(0);
  if (o.validation < 0 || o.validation >= n) {
    return Fail("train: --validation " + std::to_string(o.validation) + " leaves no training images of " +
                std::to_string(n));
  }

  torch::manual_seed(o.seed);
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  torch::Tensor shuffled = torch::tensor(order);
  const Normalization norm = FamilyNormalization(ModelFamily::kLanet);
  torch::Tensor val_x = NormalizeImages(set->images.index_select(0, shuffled.narrow(0, 0, o.validation)), norm);
  torch::Tensor val_y = set->labels.index_select(0, shuffled.narrow(0, 0, o.validation));
  torch::Tensor train_x =
      NormalizeImages(set->images.index_select(0, shuffled.narrow(0, o.validation, n - o.validation)), norm);
  torch::Tensor train_y = set->labels.index_select(0, shuffled.narrow(0, o.validation, n - o.validation));
  set->images = torch::Tensor();
  const int64_t n_train = train_x.size(0);
  const int64_t steps_per_epoch = n_train / o.batch_size;  // the last partial batch is dropped
  const int64_t total_steps = steps_per_epoch * o.epochs;
  const int64_t warmup = std::max<int64_t>(1, total_steps * 15 / 100);

  std::unique_ptr<TrainableLanet> net = NewTrainableLanet(o.lanet);
  torch::optim::SGD optimizer(net->Parameters(),
                              torch::optim::SGDOptions(o.lr).momentum(0.9).nesterov(true).weight_decay(o.weight_decay));
  std::fprintf(stderr, "training LaNet C=%d, %d layers on %lld images (%lld held out), %d epochs of %lld steps\n",
               o.lanet.channels, o.lanet.layers, static_cast<long long>(n_train), static_cast<long long>(o.validation),
               o.epochs, static_cast<long long>(steps_per_epoch));
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&start] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  std::uniform_int_distribution<int> offset(0, 8), coin(0, 1);
  int64_t step = 0;
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    Progress progress("epoch " + std::to_string(epoch) + "/" + std::to_string(o.epochs));
    torch::Tensor perm = torch::randperm(n_train);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
      torch::Tensor idx = perm.narrow(0, b * o.batch_size, o.batch_size);
      torch::Tensor padded = torch::constant_pad_nd(train_x.index_select(0, idx), {4, 4, 4, 4});
      std::vector<torch::Tensor> crops;
      crops.reserve(static_cast<size_t>(o.batch_size));
      for (int64_t k = 0; k < o.batch_size; ++k) {
        torch::Tensor crop = padded[k].narrow(1, offset(rng), 32).narrow(2, offset(rng), 32);
        crops.push_back(coin(rng) ? crop.flip({2}) : crop);
      }
      // Channels-last: oneDNN's convolutions need no layout copies (LibTorch 1.13), a much faster step.
      torch::Tensor x = torch::stack(crops).contiguous(torch::MemoryFormat::ChannelsLast);
      torch::Tensor y = train_y.index_select(0, idx);
      const double lr =
          step < warmup ? o.lr * static_cast<double>(step + 1) / static_cast<double>(warmup)
                        : o.lr * static_cast<double>(total_steps - step) / static_cast<double>(total_steps - warmup);
      static_cast<torch::optim::SGDOptions&>(optimizer.param_groups()[0].options()).lr(lr);
      optimizer.zero_grad();
      torch::Tensor logits = net->Forward(x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing));
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>();
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      char detail[64];
      std::snprintf(detail, sizeof detail, "loss %.3f", loss_sum / static_cast<double>(b + 1));
      progress.Update(static_cast<size_t>(b + 1), static_cast<size_t>(steps_per_epoch), detail);
    }
    auto eval_net = LoadLanet(net->State());
    if (!eval_net.ok()) return Fail("train: " + eval_net.status().message());
    const double val_acc =
        o.validation ? Predict(**eval_net, val_x, 500, nullptr).eq(val_y).to(torch::kFloat64).mean().item<double>()
                     : 0.0;
    const double seconds = elapsed();
    std::fprintf(stderr,
                 "epoch %d/%d: loss %.4f, train accuracy %.4f, validation accuracy %.4f, %s elapsed, about %s left\n",
                 epoch, o.epochs, loss_sum / static_cast<double>(steps_per_epoch),
                 static_cast<double>(correct) / static_cast<double>(steps_per_epoch * o.batch_size), val_acc,
                 Duration(seconds).c_str(), Duration(seconds / epoch * (o.epochs - epoch)).c_str());
  }
  std::vector<SavedEntry> entries;
  for (const auto& [key, tensor] : net->State()) entries.push_back({key, tensor, 0});
  std::FILE* out = std::fopen(o.output.c_str(), "wb");
  const std::string bytes = TorchSaveDict(entries);
  if (!out || std::fwrite(bytes.data(), 1, bytes.size(), out) != bytes.size() || std::fclose(out) != 0) {
    return Fail("train: cannot write " + o.output);
  }
  std::printf("wrote %s (%zu bytes) after %s\n", o.output.c_str(), bytes.size(), Duration(elapsed()).c_str());
  return 0;
}

int RunEvaluate(const std::vector<std::string>& args) {
  ModelFlags model_flags;
  std::string path;
  int64_t batch_size = 500;
  auto set_flag = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (a != "--batch-size" && a != "--threads") return false;
    const int value = std::stoi(v);
    if (value < 1) return InvalidError(a + " needs a positive number, got '" + v + "'");
    if (a == "--batch-size")
      batch_size = value;
    else
      torch::set_num_threads(value);
    return true;
  };
  auto take = [&path](const std::vector<std::string>& all, size_t* i) -> StatusOr<bool> {
    const std::string& a = all[*i];
    if (a.empty() || a[0] == '-') return false;
    if (!path.empty()) return InvalidError("one PATH only, got '" + path + "' and '" + a + "'");
    path = a;
    return true;
  };
  const char help[] =
      "usage: intgrads-images evaluate PATH [model flags] [--batch-size N] [--threads N]\n\n"
      "Top-1 accuracy of a model on a CIFAR-style zip or folder tree (<split>/<class>/<image>), with\n"
      "the service's preprocessing. Prints the accuracy of each class, and last a line\n"
      "'top1_accuracy: 0.XXXX'. Without a model flag, the embedded default model.\n";
  if (auto exit = WalkFlags("evaluate", args, help, &model_flags, set_flag, take)) return *exit;
  if (path.empty()) return Fail("evaluate: usage: intgrads-images evaluate PATH [model flags]");
  torch::Device device(torch::kCPU);
  auto model = LoadFlaggedModel(model_flags, &device);
  if (!model.ok()) return Fail(model.status().message());
  const ModelInfo& info = (*model)->info();
  Progress reading("reading " + path);
  DatasetOptions dataset_options;
  dataset_options.size = info.input_size;
  dataset_options.progress = [&reading](size_t done, size_t total) { reading.Update(done, total); };
  auto set = LoadLabeledImages(path, info.classes, dataset_options);
  if (!set.ok()) return Fail("evaluate: " + set.status().message());
  Progress progress("evaluating");
  torch::Tensor inputs = NormalizeImages(set->images, info.normalization).to(device);
  torch::Tensor hits = Predict(**model, inputs, batch_size, &progress).cpu().eq(set->labels);
  for (size_t c = 0; c < info.classes.size(); ++c) {
    torch::Tensor mask = set->labels.eq(static_cast<int64_t>(c));
    const int64_t count = mask.sum().item<int64_t>();
    if (count == 0) continue;
    std::printf("%-12s %.4f (%lld images)\n", info.classes[c].c_str(),
                hits.masked_select(mask).to(torch::kFloat64).mean().item<double>(), static_cast<long long>(count));
  }
  std::printf("top1_accuracy: %.4f\n", hits.to(torch::kFloat64).mean().item<double>());
  return 0;
}

}  // namespace intgrads
