#include "common/job.h"

#include <utility>

namespace intgrads {

JobRequest MakeJobRequest(const AttributionsRequest& options, const std::vector<int>& targets, Format format,
                          bool predict, AttributionInput* input) {
  JobRequest job;
  if (predict) {
    job.predict = true;
    job.target = kPredictedTarget;
  } else if (targets.size() == 1 && options.top_k == 0) {
    job.target = targets.front();  // one class: the request every worker version reads
  } else {
    job.targets = targets;
    job.top_k = options.top_k;
  }
  job.n_steps = options.n_steps;
  job.method = options.method;
  job.format = format;
  job.heatmap = options.heatmap;
  job.sign = options.sign;
  job.outlier_perc = options.outlier_perc.value_or(2.0);
  job.paths = options.paths;
  job.regions = options.regions;
  job.image = std::move(input->image);
  job.tensor = std::move(input->tensor);
  return job;
}

Status ValidateJob(const JobRequest& job, int num_classes, const RequestLimits& limits) {
  if (job.predict) return Status::Ok();  // the forward pass alone: no path, no class to attribute
  RETURN_IF_ERROR(ValidateSteps(job.n_steps, job.method, limits));
  RETURN_IF_ERROR(ValidateHeatmap(job.heatmap, job.sign, job.outlier_perc));
  RETURN_IF_ERROR(ValidatePathRequest(job.paths, job.method, limits));
  RETURN_IF_ERROR(ValidateRegionRequest(job.regions, job.format));
  if (job.top_k == 0 && job.targets.empty()) {
    return ValidateTargets({job.target}, 0, num_classes, job.method, limits);
  }
  return ValidateTargets(job.targets, job.top_k, num_classes, job.method, limits);
}

}  // namespace intgrads
