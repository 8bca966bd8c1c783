#include "worker/serving/replies.h"

#include <torch/autograd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "common/job.h"
#include "worker/formats/formats.h"

namespace intgrads {

namespace {

using Clock = std::chrono::steady_clock;

// Logs the warning of a convergence delta past 10% of f(x) - f(baseline).
void WarnIfIncomplete(const Attribution& a, const JobRequest& request) {
  if (!IsIncomplete(a, 0.1)) return;
  std::fprintf(stderr,
               "intgrads-worker: warning: request %llu, class %d: convergence delta %.4g is %.0f%% of f(x) - "
               "f(baseline) = %.4g (method %s, n_steps %d); the IG is incomplete: raise n_steps or try method scan "
               "(docs/FAITHFULNESS.md)\n",
               static_cast<unsigned long long>(request.id), a.target, a.convergence_delta,
               100.0 * std::fabs(a.convergence_delta) / std::fabs(a.target_logit - a.baseline_logit),
               a.target_logit - a.baseline_logit, Name(request.method).c_str(), a.n_steps);
}

}  // namespace

namespace {

double Since(Clock::time_point* mark) {
  const Clock::time_point now = Clock::now();
  const double seconds = std::chrono::duration<double>(now - *mark).count();
  *mark = now;
  return seconds;
}

// The reply to a request whose computation threw; call it in a catch block.
JobReply FailureReply(uint64_t id) {
  JobReply reply;
  reply.id = id;
  const std::string out_of_memory = "the worker ran out of memory for this request; retry later or with fewer n_steps";
  try {
    throw;
  } catch (const std::bad_alloc&) {
    reply.code = StatusCode::kUnavailable;
    reply.error = out_of_memory;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const bool memory =
        what.find("out of memory") != std::string::npos || what.find("DefaultCPUAllocator") != std::string::npos;
    std::fprintf(stderr, "intgrads-worker: request %llu failed: %s\n", static_cast<unsigned long long>(id),
                 what.substr(0, 500).c_str());
    reply.code = memory ? StatusCode::kUnavailable : StatusCode::kInternal;
    reply.error = memory ? out_of_memory : "internal error while computing the attribution";
  }
  return reply;
}

void Refuse(Work* w, const Status& status) {
  w->reply.code = status.code();
  w->reply.error = status.message();
  w->answered = true;
}

// An encoding that failed: logged, and answered as FailureReply answers what threw.
void Fail(Work* w, const Status& status) {
  std::fprintf(stderr, "intgrads-worker: request %llu failed: %s\n", static_cast<unsigned long long>(w->request.id),
               status.message().substr(0, 500).c_str());
  w->reply = JobReply();
  w->reply.id = w->request.id;
  Refuse(w, InternalError("internal error while computing the attribution"));
}

void Prepare(const Classifier& model, const torch::Device& device, const WorkerOptions& options, Work* w) {
  const JobRequest& request = w->request;
  w->reply.id = request.id;
  const Status invalid = ValidateJob(request, static_cast<int>(model.info().classes.size()), options.limits);
  if (!invalid.ok()) {
    // Over a limit: 413; any other refusal: 422, as the gateway's own checks answer.
    Refuse(w, invalid.code() == StatusCode::kTooLarge ? invalid : InvalidError(invalid.message()));
    return;
  }
  Clock::time_point mark = Clock::now();
  torch::Tensor input;
  if (!request.tensor.empty()) {
    const int side = model.info().input_size;
    if (request.image.height != side || request.image.width != side || request.image.channels != 3) {
      Refuse(w, InvalidError("input: a tensor is the model's normalized input, 3 x " + std::to_string(side) + " x " +
                             std::to_string(side)));
      return;
    }
    std::vector<float> chw(request.tensor.size() / sizeof(float));
    std::memcpy(chw.data(), request.tensor.data(), chw.size() * sizeof(float));
    if (!std::all_of(chw.begin(), chw.end(), [](float v) { return std::isfinite(v); })) {
      Refuse(w, InvalidError("input: the tensor holds NaN or infinity"));
      return;
    }
    w->seen = DenormalizeChw(chw.data(), side, side, model.info().normalization);
    input = torch::tensor(chw).view({1, 3, side, side}).to(device);
  } else {
    w->seen = ModelInputImage(request.image, model.info());
    input = NormalizedTensor(w->seen, model.info()).to(device);
  }
  if (request.predict) {
    w->job.input = input;
    w->prepare = Since(&mark);
    return;
  }
  Targets targets{request.targets, request.top_k};
  if (targets.classes.empty() && targets.top_k == 0) targets.classes = {request.target};
  if (request.method == Method::kScan) {
    // The scan needs its target before the path; other rules let the
    // engine read predicted and top-k classes from the pass it makes at x
    // anyway.
    torch::NoGradGuard no_grad;
    targets.classes = ChooseTargets(targets, model.Forward(input.to(model.dtype())).to(torch::kCPU));
    targets.top_k = 0;
  }
  const PathRequest& wanted = request.paths;
  torch::Tensor baseline_image;
  if (!wanted.baseline_image.pixels.empty()) {
    baseline_image = NormalizedTensor(ModelInputImage(wanted.baseline_image, model.info()), model.info()).to(device);
  }
  auto paths = MakePaths(input, model.info(), wanted, baseline_image);
  StatusOr<PathSchedule> schedule = PathSchedule();
  if (paths.ok() && wanted.tolerance <= 0.0) {
    const int scan_target = targets.classes.empty() ? 0 : targets.classes.front();
    schedule = PlanSchedule(model, input, scan_target, request.method, request.n_steps, options.engine,
                            paths->front().baseline);
  }
  if (!paths.ok() || !schedule.ok()) {
    Refuse(w, InvalidError((!paths.ok() ? paths.status() : schedule.status()).message()));
    return;
  }
  w->job = PathJob{input, std::move(paths).value(), std::move(targets), std::move(schedule).value()};
  w->prepare = Since(&mark);
}

void Encode(const Classifier& model, const WorkerOptions& options, Work* w) {
  const JobRequest& request = w->request;
  Clock::time_point mark = Clock::now();
  JobReply& reply = w->reply;
  if (request.predict) {
    reply.probabilities = Probabilities(w->logits);
    reply.target = Predicted(reply.probabilities);
    reply.payload = EncodePrediction(w->logits, reply.probabilities, model.info().classes);
    reply.content_type = FormatEntry(Format::kJson).content_type;
    reply.code = StatusCode::kOk;
    reply.prepare_seconds = w->prepare;
    reply.attribute_seconds = w->attribute;
    reply.encode_seconds = Since(&mark);
    w->answered = true;
    return;
  }
  const std::vector<Attribution>& attributions = w->attributions;
  std::vector<double> probabilities = Probabilities(attributions.front().logits);
  for (size_t i = 0; i < attributions.size(); ++i) {
    const Attribution& attribution = attributions[i];
    StatusOr<Regions> regions = Regions();
    if (request.regions.kind != RegionKind::kNone) {
      regions = ComputeRegions(attribution, request.regions, w->seen);
      if (!regions.ok()) {
        Fail(w, regions.status());
        return;
      }
    }
    Explanation explanation{&attribution,
                            &w->job.input,
                            &model.info().classes,
                            probabilities,
                            request.method,
                            attribution.n_steps,
                            request.regions.kind != RegionKind::kNone ? &regions.value() : nullptr};
    double compress = 0.0;
    const EncodeOptions how{&w->seen,
                            {request.heatmap, request.sign, request.outlier_perc},
                            request.regions.top,
                            options.gzip_level,
                            &compress};
    StatusOr<std::string> payload = EncoderOf(request.format)(explanation, how);
    if (!payload.ok()) {
      Fail(w, payload.status());
      return;
    }
    const double spent = Since(&mark);
    w->encode += spent - compress;
    w->compress += compress;
    JobReply& out = i == 0 ? reply : reply.others.emplace_back();
    out.id = request.id;
    out.payload = std::move(payload).value();
    out.content_type = FormatEntry(request.format).content_type;
    out.target = attribution.target;
    out.probabilities = probabilities;
    out.convergence_delta = attribution.convergence_delta;
    out.n_steps = attribution.n_steps;
    out.tolerance_met = !(request.paths.tolerance > 0.0 && IsIncomplete(attribution, request.paths.tolerance));
    WarnIfIncomplete(attribution, request);
  }
  // The gateway disconnects a peer that sends it a frame over its limit: refuse the answer instead.
  size_t largest = reply.payload.size();
  for (const JobReply& other : reply.others) largest = std::max(largest, other.payload.size());
  if (request.max_reply_bytes > 0 && static_cast<int64_t>(largest) > request.max_reply_bytes) {
    reply = JobReply();
    reply.id = request.id;
    Refuse(w, TooLargeError("the answer would be " + std::to_string(largest) + " bytes, over the gateway's limit of " +
                            std::to_string(request.max_reply_bytes) +
                            " (--max-reply-bytes); ask for fewer n_steps, fewer paths or another format"));
    return;
  }
  reply.code = StatusCode::kOk;
  reply.prepare_seconds = w->prepare;
  reply.attribute_seconds = w->attribute;
  reply.encode_seconds = w->encode;
  reply.compress_seconds = w->compress;
  reply.copy_seconds = w->copy;
  w->answered = true;
}

// The predictions among the work: one forward pass for all, no gradients.
void Predict(const Classifier& model, std::vector<Work>* work) {
  std::vector<size_t> predicted;
  std::vector<torch::Tensor> inputs;
  for (size_t i = 0; i < work->size(); ++i) {
    if ((*work)[i].answered || !(*work)[i].request.predict) continue;
    predicted.push_back(i);
    inputs.push_back((*work)[i].job.input);
  }
  if (predicted.empty()) return;
  Clock::time_point mark = Clock::now();
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = model.Forward(torch::cat(inputs).to(model.dtype())).to(torch::kCPU);
    const double seconds = Since(&mark);
    for (size_t k = 0; k < predicted.size(); ++k) {
      Work& w = (*work)[predicted[k]];
      w.logits = logits.narrow(0, static_cast<int64_t>(k), 1).to(torch::kFloat32).contiguous();
      w.attribute = seconds;
    }
  } catch (...) {
    for (size_t i : predicted) {
      (*work)[i].reply = FailureReply((*work)[i].request.id);
      (*work)[i].answered = true;
    }
  }
}

}  // namespace

std::vector<Work> AttributeRequests(const Classifier& model, const torch::Device& device,
                                    std::vector<JobRequest> requests, const WorkerOptions& options, bool async_copies,
                                    const PassProgress& progress) {
  std::vector<Work> work(requests.size());
  auto fail = [&work](size_t i) {
    work[i].reply = FailureReply(work[i].request.id);
    work[i].answered = true;
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    work[i].request = std::move(requests[i]);
    try {
      Prepare(model, device, options, &work[i]);
    } catch (...) {
      fail(i);
    }
  }
  Predict(model, &work);
  // Requests with a fixed schedule share their passes; adaptive steps
  // (a tolerance) run alone, as each try depends on the one before.
  std::vector<size_t> shared;
  std::vector<PathJob> jobs;
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].answered || work[i].request.predict || work[i].request.paths.tolerance > 0.0) continue;
    shared.push_back(i);
    jobs.push_back(work[i].job);
  }
  if (!jobs.empty()) {
    Clock::time_point mark = Clock::now();
    try {
      PassProgress shared_progress;
      if (progress) {
        shared_progress = [&progress, &shared](size_t job, int64_t done, int64_t total,
                                               const std::function<torch::Tensor()>& ig) {
          progress(shared[job], done, total, ig);
        };
      }
      std::vector<std::vector<Attribution>> results =
          AttributeJobs(model, jobs, options.engine, async_copies, shared_progress);
      const double seconds = Since(&mark);
      for (size_t k = 0; k < shared.size(); ++k) {
        work[shared[k]].attributions = std::move(results[k]);
        work[shared[k]].attribute = seconds;
      }
    } catch (...) {
      for (size_t i : shared) fail(i);  // one allocation failure fails the passes they share
    }
  }
  for (size_t i = 0; i < work.size(); ++i) {
    Work& w = work[i];
    if (w.answered || w.request.predict || w.request.paths.tolerance <= 0.0) continue;
    try {
      Clock::time_point mark = Clock::now();
      int spent = 0;
      bool met = false;
      PassProgress own_progress;
      if (progress) {
        own_progress = [&progress, i](size_t, int64_t done, int64_t total, const std::function<torch::Tensor()>& ig) {
          progress(i, done, total, ig);
        };
      }
      w.attributions = AttributeToTolerance(model, w.job.input, w.job.paths, w.job.targets, w.request.paths.tolerance,
                                            options.limits.max_n_steps, options.engine, &met, &spent, own_progress);
      w.attribute = Since(&mark);
    } catch (...) {
      fail(i);
    }
  }
  return work;
}

void EncodeWork(const Classifier& model, const WorkerOptions& options, Work* work) {
  if (work->answered) return;
  try {
    Clock::time_point mark = Clock::now();
    for (Attribution& a : work->attributions) ResolveCopies(&a);
    work->copy = Since(&mark);
    Encode(model, options, work);
  } catch (...) {
    work->reply = FailureReply(work->request.id);
    work->answered = true;
  }
}

std::vector<JobReply> ComputeReplies(const Classifier& model, const torch::Device& device,
                                     const std::vector<JobRequest>& requests, const WorkerOptions& options) {
  std::vector<Work> work = AttributeRequests(model, device, requests, options, /*async_copies=*/false);
  std::vector<JobReply> replies;
  replies.reserve(work.size());
  for (Work& w : work) {
    EncodeWork(model, options, &w);
    replies.push_back(std::move(w.reply));
  }
  return replies;
}

JobReply ComputeReply(const Classifier& model, const torch::Device& device, const JobRequest& request,
                      const WorkerOptions& options) {
  return ComputeReplies(model, device, {request}, options).front();
}

WorkerInfo DescribeWorker(const Classifier& model, const torch::Device& device, const std::string& name) {
  WorkerInfo info;
  info.model = name;
  info.family = FamilyName(model.info().family);
  info.variant = model.info().variant;
  info.device = device.str();
  info.classes = model.info().classes;
  info.input_size = model.info().input_size;
  info.mean.assign(model.info().normalization.mean.begin(), model.info().normalization.mean.end());
  info.std.assign(model.info().normalization.std.begin(), model.info().normalization.std.end());
  return info;
}

}  // namespace intgrads
