// moondream.v1.Moondream on the gRPC callback API. Handlers never block: they
// translate the proto, submit to the engine and return a reactor that the engine's
// completion callback finishes.
#pragma once


#include <grpcpp/grpcpp.h>

#include "engine/engine.h"
#include "moondream/v1/moondream.grpc.pb.h"
#include "server/calls.h"

namespace moondream::server {

class MoondreamService final : public v1::Moondream::CallbackService {
 public:
  // Until `state` has an engine every RPC answers UNAVAILABLE ("loading"), so the server
  // can listen (health, reflection, metrics) while models load. With an API key, every
  // RPC needs metadata "authorization: Bearer <key>". `state` must outlive the service.
  explicit MoondreamService(const ServingState* state);
  ~MoondreamService() override;

  grpc::ServerUnaryReactor* Caption(grpc::CallbackServerContext* ctx,
                                    const v1::CaptionRequest* request,
                                    v1::CaptionResponse* response) override;
  grpc::ServerWriteReactor<v1::TextChunk>* StreamCaption(
      grpc::CallbackServerContext* ctx, const v1::CaptionRequest* request) override;
  grpc::ServerUnaryReactor* Query(grpc::CallbackServerContext* ctx,
                                  const v1::QueryRequest* request,
                                  v1::QueryResponse* response) override;
  grpc::ServerWriteReactor<v1::TextChunk>* StreamQuery(grpc::CallbackServerContext* ctx,
                                                       const v1::QueryRequest* request) override;
  grpc::ServerUnaryReactor* Detect(grpc::CallbackServerContext* ctx,
                                   const v1::DetectRequest* request,
                                   v1::DetectResponse* response) override;
  grpc::ServerUnaryReactor* Point(grpc::CallbackServerContext* ctx,
                                  const v1::PointRequest* request,
                                  v1::PointResponse* response) override;
  grpc::ServerUnaryReactor* EncodeImage(grpc::CallbackServerContext* ctx,
                                        const v1::EncodeImageRequest* request,
                                        v1::EncodeImageResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* ctx,
                                     const v1::GetModelRequest* request,
                                     v1::ModelInfo* response) override;

 private:
  absl::StatusOr<const Backend*> Admit(const grpc::CallbackServerContext& ctx) const;
  template <typename Response>
  grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* ctx, const char* method,
                                     Request request, Response* response);
  grpc::ServerWriteReactor<v1::TextChunk>* RunStream(grpc::CallbackServerContext* ctx,
                                                     const char* method, Request request);

  const ServingState* state_;
};

}  // namespace moondream::server
