// The messages between gateway and workers (docs/PROTOCOL.md). Workers hold
// a ZeroMQ DEALER socket connected to the gateway's ROUTER. Every message is
// a header frame (a small JSON object with the protocol version and the
// message type) and, for requests and replies, one binary frame:
//
//   ready      worker -> gateway  [header{model,family,variant,device,classes,input_size,mean,std,slots}]
//   heartbeat  both ways          [header]
//   request    gateway -> worker  [header{id,target,n_steps,method,height,width,channels,format,heatmap,
//                                         baseline,...,targets,top_k,regions,...,max_reply_bytes,input,predict,
//                                         sign,outlier_perc,progress_ms},
//                                  pixels(, baseline pixels)]
//   reply      worker -> gateway  [header{id,code,error,convergence_delta,compute_seconds,prepare_seconds,
//                                         attribute_seconds,encode_seconds,compress_seconds,target,
//                                         probabilities,content_type,n_steps_used,tolerance_met,others},
//                                  payload(, one payload per entry of others)]
//
// The fields after `channels` and `compute_seconds` (and mean, std, slots) are
// optional: a peer that omits them gets the defaults below.
//   progress   worker -> gateway  [header{id,done,total,seconds,side}(, the IG so far)]
//   disconnect both ways          [header]
//
// (The ROUTER sees the worker's identity as an extra first frame.) Decoding
// never throws: a malformed or foreign message is a Status.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/request.h"
#include "common/status.h"
#include "common/vocabulary.h"

namespace intgrads {

constexpr int kProtocolVersion = 3;
// The most requests a worker may ask to hold at once.
constexpr int kMaxSlots = 256;

enum class MessageType { kReady, kHeartbeat, kRequest, kReply, kDisconnect, kProgress };

// What a worker serves, announced in its ready message.
struct WorkerInfo {
  std::string model;    // the name requests use to pick it ("default", "bit", ...)
  std::string family;   // "bit" | "lanet" | "torchscript"
  std::string variant;  // "R50x1", "C128-L24-aux"
  std::string device;   // "cpu", "cuda:0"
  std::vector<std::string> classes;
  int input_size = 32;
  std::vector<double> mean;  // the per-channel normalization, as the model applies it
  std::vector<double> std;
  int slots = 1;  // requests the worker takes at a time (it batches them)
};

// JobRequest::target for "the model's top class at the input".
constexpr int kPredictedTarget = -1;

struct JobRequest {
  uint64_t id = 0;
  int target = 0;
  int n_steps = 50;
  Method method = Method::kGaussLegendre;
  // The image as sent (any size; 1, 3 or 4 channels), made the model's
  // input by the worker; or, when `tensor` is set, only its height and
  // width (the model's input size) and no pixels.
  Image image;
  // The model's normalized input itself, float32 (little-endian) 3 x
  // height x width (KServe v2's FP32 input); empty for an image.
  std::string tensor;
  bool predict = false;                // the forward pass alone: logits and probabilities, no attribution
  Format format = Format::kGzip;       // the payload's encoding (worker/formats/formats.h)
  Heatmap heatmap = Heatmap::kSigned;  // png only (ValidateHeatmap)
  Sign sign = Sign::kNone;             // png only: Captum's look when set
  double outlier_perc = 2.0;           // png only, with sign
  PathRequest paths;                   // baseline, SmoothGrad, tolerance; the image baseline in a third frame
  // Several targets: `targets` (when not empty, `target` is ignored), or the
  // top_k classes at the input; one reply carries them all (JobReply::others).
  std::vector<int> targets;
  int top_k = 0;
  RegionRequest regions;  // IDG for regions (json, png)
  // The largest payload frame the gateway reads (BrokerOptions::max_reply_bytes);
  // a larger answer is refused by the worker (413). 0: not said.
  int64_t max_reply_bytes = 0;
  // > 0: the worker reports its progress (JobProgress) at most this often,
  // and once the passes are done; 0: it does not.
  int progress_ms = 0;
};

// How far a request's passes are, while they run (JobRequest::progress_ms).
struct JobProgress {
  uint64_t id = 0;
  int64_t done = 0;      // path points through the passes (each target's backward pass counted once)
  int64_t total = 0;     // all of them (adaptive steps: the most they may take)
  double seconds = 0.0;  // since the request's batch started
  // The first target's IG over the points done, 3 x side x side float32
  // (little-endian) in its own frame; empty when not sent.
  int side = 0;
  std::string ig;
};

struct JobReply {
  uint64_t id = 0;
  // The outcome as a Status code (on the wire by name, StatusCodeName); the
  // gateway alone turns it into an HTTP status.
  StatusCode code = StatusCode::kOk;
  std::string error;
  bool ok() const { return code == StatusCode::kOk; }
  Status status() const { return {code, error}; }
  double convergence_delta = 0.0;
  double queue_seconds = 0.0;         // waiting for a worker (set by the gateway's broker; not on the wire)
  double wait_seconds = 0.0;          // in the worker's queue, before its batch started
  double compute_seconds = 0.0;       // the worker's time on it from its batch's start, of which:
  double prepare_seconds = 0.0;       //   the image to the model's input, paths and schedule
  double attribute_seconds = 0.0;     //   the forward and backward passes (the engine)
  double copy_seconds = 0.0;          //   waiting for the results' copies to the host (a GPU)
  double encode_seconds = 0.0;        //   torch.save (or npz, JSON, PNG) and regions
  double compress_seconds = 0.0;      //   gzip
  std::string payload;                // the request's format when status is 200
  int target = -1;                    // the class attributed (the predicted one for kPredictedTarget)
  std::vector<double> probabilities;  // softmax of f(x)
  std::string content_type = "application/gzip";
  int n_steps = 0;            // path points per path, as used (adaptive steps choose it)
  bool tolerance_met = true;  // adaptive steps: whether the tolerance was reached
  // With several targets, the second and later ones: each with its target,
  // convergence_delta, n_steps, tolerance_met and payload (the rest as above).
  std::vector<JobReply> others;
};

struct Message {
  MessageType type = MessageType::kHeartbeat;
  WorkerInfo ready;
  JobRequest request;
  JobReply reply;
  JobProgress progress;
};

using Frames = std::vector<std::string>;

Frames EncodeReady(const WorkerInfo& info);
Frames EncodeHeartbeat();
Frames EncodeDisconnect();
Frames EncodeRequest(const JobRequest& request);
Frames EncodeProgress(JobProgress progress);
// Moves the payloads into the frames.
Frames EncodeReply(JobReply reply);

// Moves the pixel and payload frames into the message.
StatusOr<Message> DecodeMessage(Frames frames);

// The id of a request whose message DecodeMessage refuses (a word this side
// does not know, a frame of the wrong size), when its header has one: the
// worker answers it refused rather than leave the gateway waiting.
std::optional<uint64_t> RefusedRequestId(const Frames& frames);

}  // namespace intgrads
