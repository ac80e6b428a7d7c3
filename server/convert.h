// Conversions between the public proto messages and the engine's plain structs.
// Semantic validation (ranges, empty text, image bytes) belongs to the engine; these
// functions only translate, saturating integers that do not fit the engine's types.
#pragma once

#include "engine/api.h"
#include "moondream/v1/moondream.pb.h"

namespace moondream::server {

namespace v1 = ::moondream::v1;

Request ToRequest(const v1::CaptionRequest& in);
Request ToRequest(const v1::QueryRequest& in, Task task = Task::kQuery);
Request ToRequest(const v1::DetectRequest& in);
Request ToRequest(const v1::PointRequest& in);
Request ToRequest(const v1::EncodeImageRequest& in);

void FillResponse(const Result& result, v1::CaptionResponse* out);
void FillResponse(const Result& result, v1::QueryResponse* out);
void FillResponse(const Result& result, v1::DetectResponse* out);
void FillResponse(const Result& result, v1::PointResponse* out);
void FillResponse(const Result& result, v1::EncodeImageResponse* out);
// The final message of a stream: model, usage, timings and finish reason.
v1::TextChunk FinalChunk(const Result& result);

void FillModelInfo(const ModelInfo& info, v1::ModelInfo* out);

}  // namespace moondream::server
