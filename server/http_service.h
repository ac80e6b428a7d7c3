// The HTTP routes: OpenAI's chat-completions and models API on the engine (/v1), and
// the operational endpoints (/metrics, /healthz, /readyz). It speaks JSON through
// server/openai.h and HTTP through http::Responder; it knows nothing of Beast or tensors.
// docs/http.md describes every route.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "server/calls.h"
#include "server/http_server.h"

namespace moondream::server {

class HttpService {
 public:
  // `state` must outlive the service. stall_timeout: /healthz fails while a worker is still
  // running a request this long after its deadline.
  HttpService(const ServingState* state, std::chrono::seconds stall_timeout);

  // --http-listen serves every route; --metrics-listen only the operational ones.
  http::Handler ApiHandler();
  http::Handler OpsHandler();
  // Refusals by the transport itself (400, 413, 431) in OpenAI's error shape.
  static std::pair<std::string, std::string> ErrorBody(int status, const std::string& message);

 private:
  // /metrics, /healthz, /readyz; false when `request` is for another path.
  bool ServeOps(const http::HttpRequest& request, http::Responder& responder) const;
  void ServeApi(const http::HttpRequest& request, std::shared_ptr<http::Responder> responder);
  void ChatCompletions(const http::HttpRequest& request,
                       std::shared_ptr<http::Responder> responder);
  void Models(const http::HttpRequest& request, const std::string& name,
              http::Responder& responder);

  // 503 with the reason when the engine has a stuck worker; 200 otherwise.
  void Liveness(http::Responder& responder) const;

  const ServingState* state_;
  const std::chrono::seconds stall_timeout_;
  const int64_t created_;  // the "created" time of every model: when the server started
};

}  // namespace moondream::server
