// The gateway-worker message format on its own.
#include "common/protocol.h"

#include <gtest/gtest.h>

#include "common/gzip.h"
#include "common/zip.h"

namespace intgrads {
namespace {

// A request for one grey pixel, the rest at its defaults.
JobRequest OnePixelRequest() {
  JobRequest r;
  r.image = {1, 1, 1, {'x'}};
  return r;
}

TEST(Protocol, RequestRoundTrip) {
  JobRequest r;
  r.id = 42;
  r.target = 3;
  r.n_steps = 17;
  r.method = Method::kRiemannTrapezoid;
  r.image = {2, 3, 1, {0x00, 0x01, 0x02, 0xff, 0x10, 0x20}};
  r.target = kPredictedTarget;
  r.format = Format::kPng;
  r.heatmap = Heatmap::kAbsolute;
  auto m = DecodeMessage(EncodeRequest(r));
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_EQ(m->type, MessageType::kRequest);
  EXPECT_EQ(m->request.id, 42U);
  EXPECT_EQ(m->request.target, kPredictedTarget);
  EXPECT_EQ(m->request.format, Format::kPng);
  EXPECT_EQ(m->request.heatmap, Heatmap::kAbsolute);
  EXPECT_EQ(m->request.n_steps, 17);
  EXPECT_EQ(m->request.method, Method::kRiemannTrapezoid);
  const Image& image = m->request.image;
  EXPECT_EQ((std::vector<int>{image.height, image.width, image.channels}), (std::vector<int>{2, 3, 1}));
  EXPECT_EQ(image.pixels, r.image.pixels);
  EXPECT_TRUE(m->request.tensor.empty());
}

// Every field of the tables in protocol.cc, each away from its default, so
// that a field one direction forgets cannot pass.
TEST(Protocol, EveryFieldKeepsItsValue) {
  JobRequest r = OnePixelRequest();
  r.paths.baseline = Baseline::kBlur;
  r.paths.blur_sigma = 2.5;
  r.paths.baseline_count = 3;
  r.paths.smoothgrad_samples = 4;
  r.paths.smoothgrad_sigma = 0.375;
  r.paths.seed = int64_t{1} << 40;
  r.paths.tolerance = 0.0625;
  r.paths.baseline_image = {1, 1, 3, {1, 2, 3}};
  r.regions = {RegionKind::kQuadtree, 3, 9, 2};
  auto request = DecodeMessage(EncodeRequest(r));
  ASSERT_TRUE(request.ok()) << request.status().message();
  const PathRequest& p = request->request.paths;
  EXPECT_EQ(p.baseline, Baseline::kBlur);
  EXPECT_DOUBLE_EQ(p.blur_sigma, 2.5);
  EXPECT_EQ(p.baseline_count, 3);
  EXPECT_EQ(p.smoothgrad_samples, 4);
  EXPECT_DOUBLE_EQ(p.smoothgrad_sigma, 0.375);
  EXPECT_EQ(p.seed, int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(p.tolerance, 0.0625);
  EXPECT_EQ(p.baseline_image.height, 1);
  EXPECT_EQ(p.baseline_image.width, 1);
  EXPECT_EQ(p.baseline_image.channels, 3);
  EXPECT_EQ(p.baseline_image.pixels, r.paths.baseline_image.pixels);
  EXPECT_EQ(request->request.regions.kind, RegionKind::kQuadtree);
  EXPECT_EQ(request->request.regions.min_side, 3);

  JobReply reply;
  reply.id = 11;
  reply.error = "why";
  reply.n_steps = 33;
  reply.tolerance_met = false;
  auto m = DecodeMessage(EncodeReply(reply));
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->reply.id, 11U);
  EXPECT_EQ(m->reply.error, "why");
  EXPECT_EQ(m->reply.n_steps, 33);
  EXPECT_FALSE(m->reply.tolerance_met);

  const WorkerInfo info{"m", "lanet", "C16-L8", "cuda:1", {"a"}, 64, {0.25}, {0.5}, 3};
  auto ready = DecodeMessage(EncodeReady(info));
  ASSERT_TRUE(ready.ok()) << ready.status().message();
  EXPECT_EQ(ready->ready.model, "m");
  EXPECT_EQ(ready->ready.family, "lanet");
  EXPECT_EQ(ready->ready.device, "cuda:1");
  EXPECT_EQ(ready->ready.input_size, 64);
  EXPECT_EQ(ready->ready.mean, info.mean);
  EXPECT_EQ(ready->ready.slots, 3);
}

// A tensor input is float32 3 x height x width, and says so; a prediction travels as a flag.
TEST(Protocol, TensorInputsAndPredictionsTravel) {
  JobRequest r = OnePixelRequest();
  r.predict = true;
  r.image = {2, 2, 3, {}};
  r.tensor.assign(size_t{3} * 2 * 2 * sizeof(float), '\0');
  const Frames frames = EncodeRequest(r);
  EXPECT_NE(frames.front().find(R"("input":"tensor")"), std::string::npos) << frames.front();
  auto decoded = DecodeMessage(frames);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_TRUE(decoded->request.predict);
  EXPECT_EQ(decoded->request.tensor.size(), 48U);
  EXPECT_EQ(decoded->request.image.height, 2);
  EXPECT_TRUE(decoded->request.image.pixels.empty());
  // As an image the same frame would be 12 bytes; as a tensor, 12 floats or nothing.
  r.tensor.resize(12);
  EXPECT_FALSE(DecodeMessage(EncodeRequest(r)).ok());
  Frames text = frames;
  text[0].replace(text[0].find("\"tensor\""), 8, "\"text\"");
  EXPECT_FALSE(DecodeMessage(text).ok());
  r.tensor.clear();
  r.image.pixels.assign(12, 9);
  r.predict = false;
  auto image = DecodeMessage(EncodeRequest(r));
  ASSERT_TRUE(image.ok()) << image.status().message();
  EXPECT_FALSE(image->request.predict);
  EXPECT_TRUE(image->request.tensor.empty());
  EXPECT_EQ(image->request.image.pixels, r.image.pixels);
}

TEST(Protocol, ReplyReadyAndHeartbeatRoundTrip) {
  JobReply reply;
  reply.id = 7;
  reply.code = StatusCode::kInvalid;
  reply.error = "bad";
  reply.convergence_delta = -0.25;
  reply.compute_seconds = 1.5;
  reply.prepare_seconds = 0.125;
  reply.attribute_seconds = 1.25;
  reply.encode_seconds = 0.0625;
  reply.compress_seconds = 0.03125;
  reply.payload = std::string("\x1f\x8b\x00", 3);
  reply.target = 5;
  reply.probabilities = {0.25, 0.75};
  reply.content_type = "application/x-npz";
  auto m = DecodeMessage(EncodeReply(reply));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->reply.code, StatusCode::kInvalid);
  EXPECT_EQ(m->reply.payload, reply.payload);
  EXPECT_DOUBLE_EQ(m->reply.convergence_delta, -0.25);
  EXPECT_DOUBLE_EQ(m->reply.compute_seconds, 1.5);
  EXPECT_DOUBLE_EQ(m->reply.prepare_seconds, 0.125);
  EXPECT_DOUBLE_EQ(m->reply.attribute_seconds, 1.25);
  EXPECT_DOUBLE_EQ(m->reply.encode_seconds, 0.0625);
  EXPECT_DOUBLE_EQ(m->reply.compress_seconds, 0.03125);
  EXPECT_EQ(m->reply.target, 5);
  EXPECT_EQ(m->reply.probabilities, reply.probabilities);
  EXPECT_EQ(m->reply.content_type, "application/x-npz");
  WorkerInfo info{"default", "bit", "R50x1", "cpu", {"a", "b"}, 32, {0.5, 0.5, 0.5}, {0.25, 0.25, 0.25}};
  auto ready = DecodeMessage(EncodeReady(info));
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(ready->ready.classes, info.classes);
  EXPECT_EQ(ready->ready.variant, "R50x1");
  EXPECT_EQ(ready->ready.std, info.std);
  EXPECT_EQ(ready->ready.slots, 1);
  info.slots = 8;
  EXPECT_EQ(DecodeMessage(EncodeReady(info))->ready.slots, 8);
  EXPECT_EQ(DecodeMessage(EncodeHeartbeat())->type, MessageType::kHeartbeat);
  EXPECT_EQ(DecodeMessage(EncodeDisconnect())->type, MessageType::kDisconnect);
}

// Progress travels with the IG so far in its own frame, or without it; a
// report past its total or with a frame of the wrong size is refused.
TEST(Protocol, ProgressRoundTrip) {
  JobProgress p;
  p.id = 9;
  p.done = 16;
  p.total = 64;
  p.seconds = 0.5;
  p.side = 2;
  const std::vector<float> ig = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, -12.5F};
  p.ig.assign(reinterpret_cast<const char*>(ig.data()), ig.size() * sizeof(float));
  auto m = DecodeMessage(EncodeProgress(p));
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->type, MessageType::kProgress);
  EXPECT_EQ(m->progress.id, 9U);
  EXPECT_EQ(m->progress.done, 16);
  EXPECT_EQ(m->progress.total, 64);
  EXPECT_DOUBLE_EQ(m->progress.seconds, 0.5);
  EXPECT_EQ(m->progress.side, 2);
  EXPECT_EQ(m->progress.ig, p.ig);
  JobProgress bare = p;
  bare.ig.clear();
  m = DecodeMessage(EncodeProgress(bare));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->progress.side, 0);
  EXPECT_TRUE(m->progress.ig.empty());
  JobProgress past = p;
  past.done = 65;
  EXPECT_FALSE(DecodeMessage(EncodeProgress(past)).ok());
  JobProgress wrong = p;
  wrong.side = 3;
  EXPECT_FALSE(DecodeMessage(EncodeProgress(wrong)).ok());
  Frames frames = EncodeProgress(p);
  frames.push_back("extra");
  EXPECT_FALSE(DecodeMessage(frames).ok());
}

// A reply carries its outcome as a status code by name; the gateway alone
// makes it an HTTP status. A name that is no code is refused.
TEST(Protocol, RepliesCarryStatusCodesByName) {
  for (StatusCode code : {StatusCode::kOk, StatusCode::kInvalid, StatusCode::kTooLarge, StatusCode::kUnavailable,
                          StatusCode::kInternal, StatusCode::kMalformed, StatusCode::kNotFound}) {
    JobReply reply;
    reply.id = 3;
    reply.code = code;
    reply.error = code == StatusCode::kOk ? "" : "why";
    const Frames frames = EncodeReply(reply);
    EXPECT_NE(frames.front().find(std::string("\"code\":\"") + StatusCodeName(code) + "\""), std::string::npos);
    auto m = DecodeMessage(frames);
    ASSERT_TRUE(m.ok()) << m.status().message();
    EXPECT_EQ(m->reply.code, code);
    EXPECT_EQ(m->reply.status().message(), reply.error);
  }
  for (const char* code : {"\"teapot\"", "418", "null"}) {
    EXPECT_FALSE(DecodeMessage({std::string(R"({"v": 3, "type": "reply", "id": 1, "error": "", "convergence_delta": 0,
                                   "compute_seconds": 0, "code": )") +
                                    code + "}",
                                ""})
                     .ok())
        << code;
  }
}

// The fields added over time are optional: a message without them decodes
// with their defaults.
TEST(Protocol, LaterFieldsAreOptional) {
  auto request = DecodeMessage({R"({"v": 3, "type": "request", "id": 1, "target": 2, "n_steps": 5,
                                    "method": "riemann_left", "height": 1, "width": 1, "channels": 1})",
                                std::string(1, '\x07')});
  ASSERT_TRUE(request.ok()) << request.status().message();
  EXPECT_EQ(request->request.format, Format::kGzip);
  EXPECT_EQ(request->request.heatmap, Heatmap::kSigned);
  auto reply = DecodeMessage({R"({"v": 3, "type": "reply", "id": 1, "code": "ok", "error": "",
                                  "convergence_delta": 0.5, "compute_seconds": 1.0})",
                              "payload"});
  ASSERT_TRUE(reply.ok()) << reply.status().message();
  EXPECT_EQ(reply->reply.content_type, "application/gzip");
  EXPECT_TRUE(reply->reply.probabilities.empty());
  auto ready = DecodeMessage({R"({"v": 3, "type": "ready", "model": "m", "family": "bit", "variant": "v",
                                  "device": "cpu", "classes": ["a"], "input_size": 32})"});
  ASSERT_TRUE(ready.ok()) << ready.status().message();
  EXPECT_EQ(ready->ready.slots, 1);  // one request at a time
  auto bad = DecodeMessage({R"({"v": 3, "type": "reply", "id": 1, "code": "ok", "error": "",
                                "convergence_delta": 0.5, "compute_seconds": 1.0, "probabilities": ["x"]})",
                            "payload"});
  EXPECT_FALSE(bad.ok());
}

TEST(Protocol, SeveralTargetsTravelInOneRequestAndOneReply) {
  JobRequest r = OnePixelRequest();
  r.targets = {4, 0, 9};
  auto request = DecodeMessage(EncodeRequest(r));
  ASSERT_TRUE(request.ok()) << request.status().message();
  EXPECT_EQ(request->request.targets, r.targets);
  EXPECT_EQ(request->request.top_k, 0);
  r.targets.clear();
  r.top_k = 3;
  r.regions = {RegionKind::kSuperpixels, 4, 25, 7};
  auto second_request = DecodeMessage(EncodeRequest(r));
  ASSERT_TRUE(second_request.ok());
  EXPECT_EQ(second_request->request.top_k, 3);
  EXPECT_EQ(second_request->request.regions.kind, RegionKind::kSuperpixels);
  EXPECT_EQ(second_request->request.regions.min_side, 4);
  EXPECT_EQ(second_request->request.regions.segments, 25);
  EXPECT_EQ(second_request->request.regions.top, 7);

  JobReply reply;
  reply.id = 9;
  reply.target = 4;
  reply.payload = "first";
  reply.probabilities = {0.5, 0.5};
  reply.content_type = "image/png";
  JobReply second;
  second.target = 0;
  second.convergence_delta = 0.125;
  second.n_steps = 16;
  second.tolerance_met = false;
  second.payload = std::string("\x00second", 7);
  reply.others = {second};
  const Frames frames = EncodeReply(reply);
  EXPECT_EQ(frames.size(), 3U);
  auto m = DecodeMessage(frames);
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_EQ(m->reply.others.size(), 1U);
  const JobReply& o = m->reply.others[0];
  EXPECT_EQ(o.id, 9U);
  EXPECT_EQ(o.target, 0);
  EXPECT_DOUBLE_EQ(o.convergence_delta, 0.125);
  EXPECT_EQ(o.n_steps, 16);
  EXPECT_FALSE(o.tolerance_met);
  EXPECT_EQ(o.payload, second.payload);
  EXPECT_EQ(o.content_type, "image/png");
  EXPECT_EQ(o.probabilities, reply.probabilities);
  Frames missing = frames;
  missing.pop_back();
  EXPECT_FALSE(DecodeMessage(missing).ok());  // a payload short
  EXPECT_FALSE(DecodeMessage({R"({"v": 3, "type": "request", "id": 1, "target": 2, "n_steps": 5, "method": "m",
                                   "height": 1, "width": 1, "channels": 1, "targets": [1, "b"]})",
                              "x"})
                   .ok());
}

TEST(Protocol, RefusesOtherVersions) {
  auto m = DecodeMessage({R"({"v": 1, "type": "heartbeat"})"});  // version 1 sent the HTTP token to the gateway
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("version 1"), std::string::npos);
}

// Words travel by name; a name this side does not know is refused naming
// its field, and a refused request's id can still be read to answer it.
TEST(Protocol, WordsTravelByNameAndStrangersAreRefused) {
  JobRequest r = OnePixelRequest();
  r.method = Method::kRiemannTrapezoid;
  r.format = Format::kPng;
  r.sign = Sign::kAbsoluteValue;
  const Frames frames = EncodeRequest(r);
  EXPECT_NE(frames.front().find(R"("method":"riemann_trapezoid")"), std::string::npos) << frames.front();
  EXPECT_NE(frames.front().find(R"("sign":"absolute_value")"), std::string::npos) << frames.front();
  for (const char* field : {R"("method": "simpson")", R"("format": "bmp")", R"("baseline": 0)",
                            R"("regions": "hexagons")", R"("heatmap": "")"}) {
    const std::string header = std::string(R"({"v": 3, "type": "request", "id": 77, "target": 2, "n_steps": 5,
        "height": 1, "width": 1, "channels": 1, "method": "gausslegendre", )") +
                               field + "}";
    auto m = DecodeMessage({header, std::string(1, '\x07')});
    ASSERT_FALSE(m.ok()) << field;
    const std::string name = std::string(field).substr(1, std::string(field).find('"', 1) - 1);
    EXPECT_NE(m.status().message().find("'" + name + "'"), std::string::npos) << m.status().message();
    EXPECT_EQ(RefusedRequestId({header, std::string(1, '\x07')}), std::optional<uint64_t>(77)) << field;
  }
  EXPECT_EQ(RefusedRequestId({R"({"v": 3, "type": "reply", "id": 5})"}), std::nullopt);
  EXPECT_EQ(RefusedRequestId({R"({"v": 3, "type": "request", "id": "5"})"}), std::nullopt);
  EXPECT_EQ(RefusedRequestId({"not json"}), std::nullopt);
  EXPECT_EQ(RefusedRequestId({}), std::nullopt);
}

TEST(Protocol, RefusesMalformedMessages) {
  EXPECT_FALSE(DecodeMessage({}).ok());
  EXPECT_FALSE(DecodeMessage({"not json"}).ok());
  EXPECT_FALSE(DecodeMessage({"[1]"}).ok());
  EXPECT_FALSE(DecodeMessage({R"({"type": "heartbeat"})"}).ok());
  EXPECT_FALSE(DecodeMessage({R"({"v": 3, "type": "launch"})"}).ok());
  EXPECT_FALSE(DecodeMessage({R"({"v": 3, "type": "heartbeat"})", "extra"}).ok());
  JobRequest r;
  r.image = {2, 2, 3, {'s', 'h', 'o', 'r', 't'}};
  auto refused = DecodeMessage(EncodeRequest(r));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("image frame of 5 bytes"), std::string::npos);
  Frames frames = EncodeRequest(r);
  frames.pop_back();
  EXPECT_FALSE(DecodeMessage(frames).ok());
  r.image.channels = 1;
  r.image.pixels = {'f', 'o', 'u', 'r'};
  r.paths.baseline_image.height = 1;
  r.paths.baseline_image.width = 2;
  r.paths.baseline_image.channels = 3;
  r.paths.baseline_image.pixels.assign(6, 7);
  auto decoded = DecodeMessage(EncodeRequest(r));
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->request.paths.baseline_image.pixels, r.paths.baseline_image.pixels);
  r.paths.baseline_image.channels = 2;  // neither grey, RGB nor RGBA
  refused = DecodeMessage(EncodeRequest(r));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("baseline frame of 6 bytes"), std::string::npos);
  EXPECT_FALSE(DecodeMessage({R"({"v": 3, "type": "reply", "id": "x", "code": "ok", "error": "",
                                   "convergence_delta": 0})",
                              ""})
                   .ok());
  EXPECT_FALSE(DecodeMessage({R"({"v": 3, "type": "ready", "model": "m", "family": "bit", "variant": "v",
                                   "device": "cpu", "classes": [], "input_size": 32})"})
                   .ok());
  for (const char* slots : {"0", "257", "\"2\""}) {
    EXPECT_FALSE(DecodeMessage({std::string(R"({"v": 3, "type": "ready", "model": "m", "family": "bit", "variant": "v",
                                   "device": "cpu", "classes": ["a"], "input_size": 32, "slots": )") +
                                slots + "}"})
                     .ok())
        << slots;
  }
}

TEST(Gzip, RoundTripAndBombGuard) {
  const std::string data(1 << 20, 'a');
  auto packed = GzipCompress(data, 1);
  ASSERT_TRUE(packed.ok());
  EXPECT_LT(packed->size(), data.size() / 100);
  auto unpacked = GzipDecompress(*packed, data.size());
  ASSERT_TRUE(unpacked.ok());
  EXPECT_EQ(*unpacked, data);
  EXPECT_EQ(GzipDecompress(*packed, 1000).status().code(), StatusCode::kTooLarge);
  EXPECT_FALSE(GzipDecompress(packed->substr(0, packed->size() / 2), data.size()).ok());
  EXPECT_FALSE(GzipDecompress("plain text", 100).ok());
}

TEST(Zip, WriterOutputReadsBackAligned) {
  ZipWriter writer;
  writer.Add("archive/a", "hello");
  writer.Add("archive/data/0", std::string(100, 'x'));
  const std::string zip = writer.Finish();
  auto entries = ReadZip(zip);
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  ASSERT_EQ(entries->size(), 2U);
  EXPECT_EQ((*entries)[0].data, "hello");
  EXPECT_EQ((*entries)[1].data, std::string(100, 'x'));
  EXPECT_EQ(((*entries)[1].data.data() - zip.data()) % 64, 0);
  EXPECT_FALSE(ReadZip(zip.substr(0, zip.size() - 5)).ok());
}

}  // namespace
}  // namespace intgrads
