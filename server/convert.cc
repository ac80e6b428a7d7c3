#include "server/convert.h"

#include <algorithm>
#include <limits>

namespace moondream::server {
namespace {

// uint32 fields above INT_MAX saturate so that the engine's range check rejects them.
int Saturate(uint32_t value) {
  return static_cast<int>(std::min<uint32_t>(value, std::numeric_limits<int>::max()));
}

void SetImage(const v1::Image& image, Request* request) {
  if (image.source_case() == v1::Image::kHandle) {
    request->image_handle = image.handle();
  } else {
    request->image_borrowed = image.data();  // the message outlives the call's on_done
  }
}

GenerationSettings ToSettings(const v1::GenerationSettings& in) {
  GenerationSettings out;
  out.max_tokens = Saturate(in.max_tokens());
  out.temperature = in.temperature();
  out.top_p = in.top_p();  // 0 means 1 in both the proto and the engine
  out.seed = in.seed();
  return out;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillUsage(const Usage& in, v1::Usage* out) {
  out->set_prompt_tokens(in.prompt_tokens);
  out->set_image_tokens(in.image_tokens);
  out->set_generated_tokens(in.generated_tokens);
}

void FillTimings(const Timings& in, v1::Timings* out) {
  out->set_queue_ms(in.queue_ms);
  out->set_image_decode_ms(in.image_decode_ms);
  out->set_vision_encode_ms(in.vision_encode_ms);
  out->set_image_prefill_ms(in.image_prefill_ms);
  out->set_prefill_ms(in.prefill_ms);
  out->set_decode_ms(in.decode_ms);
  out->set_time_to_first_token_ms(in.time_to_first_token_ms);
  out->set_total_ms(in.total_ms);
}

// Every response message carries model, usage, timings and finish_reason.
template <typename Response>
void FillCommon(const Result& result, Response* out) {
  out->set_model(result.model);
  FillUsage(result.usage, out->mutable_usage());
  FillTimings(result.timings, out->mutable_timings());
  out->set_finish_reason(ToProto(result.finish_reason));
}

template <typename RegionRequest>
Request ToRegionRequest(const RegionRequest& in, Task task) {
  Request out;
  out.task = task;
  out.model = in.model();
  SetImage(in.image(), &out);
  out.text = in.object();
  out.max_objects = Saturate(in.max_objects());
  return out;
}

}  // namespace

Request ToRequest(const v1::CaptionRequest& in) {
  Request out;
  out.task = Task::kCaption;
  out.model = in.model();
  SetImage(in.image(), &out);
  out.caption_length = in.length() == v1::CAPTION_LENGTH_SHORT ? CaptionLength::kShort
                                                                : CaptionLength::kNormal;
  out.settings = ToSettings(in.settings());
  return out;
}

Request ToRequest(const v1::QueryRequest& in, Task task) {
  Request out;
  out.task = task;
  out.model = in.model();
  SetImage(in.image(), &out);
  out.text = in.question();
  out.settings = ToSettings(in.settings());
  return out;
}

Request ToRequest(const v1::DetectRequest& in) { return ToRegionRequest(in, Task::kDetect); }
Request ToRequest(const v1::PointRequest& in) { return ToRegionRequest(in, Task::kPoint); }

Request ToRequest(const v1::EncodeImageRequest& in) {
  Request out;
  out.task = Task::kEncodeImage;
  out.model = in.model();
  out.image_borrowed = in.image();
  return out;
}

void FillResponse(const Result& result, v1::CaptionResponse* out) {
  out->set_caption(result.text);
  FillCommon(result, out);
}

void FillResponse(const Result& result, v1::QueryResponse* out) {
  out->set_answer(result.text);
  FillCommon(result, out);
}

void FillResponse(const Result& result, v1::DetectResponse* out) {
  for (const Box& box : result.boxes) {
    v1::BoundingBox* b = out->add_objects();
    b->set_x_min(box.x_min);
    b->set_y_min(box.y_min);
    b->set_x_max(box.x_max);
    b->set_y_max(box.y_max);
  }
  FillCommon(result, out);
}

void FillResponse(const Result& result, v1::PointResponse* out) {
  for (const Point& point : result.points) {
    v1::NormalizedPoint* p = out->add_points();
    p->set_x(point.x);
    p->set_y(point.y);
  }
  FillCommon(result, out);
}

void FillResponse(const Result& result, v1::EncodeImageResponse* out) {
  out->set_handle(result.image_handle);
  out->set_model(result.model);
  out->set_cached_bytes(result.image_cached_bytes);
  FillTimings(result.timings, out->mutable_timings());
}

v1::TextChunk FinalChunk(const Result& result) {
  v1::TextChunk chunk;
  chunk.set_final(true);
  FillCommon(result, &chunk);
  return chunk;
}

void FillModelInfo(const ModelInfo& info, v1::ModelInfo* out) {
  out->set_name(info.name);
  out->set_precision(info.precision);
  out->set_device(info.device);
  out->set_cpu_isa(info.cpu_isa);
  out->set_parameter_count(info.parameter_count);
  for (const ComponentWeights& w : info.weights) {
    v1::ComponentWeights* cw = out->add_weights();
    cw->set_component(w.component);
    cw->set_precision(w.precision);
    cw->set_bytes(w.bytes);
    cw->set_parameters(w.parameters);
  }
  out->set_load_seconds(info.load_seconds);
  const QuantizationSummary& q = info.quantization;
  if (!q.scheme.empty()) {
    v1::QuantizationSummary* qs = out->mutable_quantization();
    qs->set_scheme(q.scheme);
    qs->set_quantized_layers(q.quantized_layers);
    qs->set_full_precision_layers(q.full_precision_layers);
    qs->set_mean_sqnr_db(q.mean_sqnr_db);
    qs->set_min_sqnr_db(q.min_sqnr_db);
    qs->set_worst_layer(q.worst_layer);
    qs->set_max_abs_error(q.max_abs_error);
    qs->set_clipped_fraction(q.clipped_fraction);
    qs->set_smoothed_layers(q.smoothed_layers);
    qs->set_input_spread_before(q.input_spread_before);
    qs->set_input_spread_after(q.input_spread_after);
    qs->set_kv_spread_before(q.kv_spread_before);
    qs->set_kv_spread_after(q.kv_spread_after);
    qs->set_shifted_channels(q.shifted_channels);
  }
  out->set_is_default(info.is_default);
  out->set_source(info.source);
}

}  // namespace moondream::server
