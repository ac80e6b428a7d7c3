// Prometheus metrics (prometheus-cpp core), rendered for GET /metrics by the HTTP front
// (server/http_service.h) on --metrics-listen and --http-listen.
//
// Request metrics are observed by the service as calls finish; the gauges (queue depth,
// in-flight, caches from Engine::Stats(); resident memory; the gRPC listener's open and
// refused connections) are refreshed at scrape time, so they are never stale and cost
// nothing between scrapes.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "engine/engine.h"
#include "server/connection_limit.h"

namespace moondream::server {

// One finished call, as labelled in the metrics.
struct RequestOutcome {
  std::string_view transport;  // "grpc" or "http"
  std::string_view method;     // "Caption", "StreamQuery", "ChatCompletions", ...
  std::string_view model;      // served or requested model ("unknown" when not loaded)
  std::string_view precision;  // of that model ("" when unknown)
  std::string_view device;
  std::string_view code = "OK";  // gRPC code name
  double seconds = 0;          // wall time seen by the server
  const Result* result = nullptr;  // set when the call succeeded
};

class Metrics {
 public:
  Metrics();
  ~Metrics();

  // The Prometheus text exposition of every series (what /metrics serves).
  std::string Render() const;
  // Publishes per-model gauges and refreshes engine gauges from `engine` at each scrape.
  // `engine` must outlive this object (or be detached with nullptr first).
  void AttachEngine(const Engine* engine);
  void ObserveRequest(const RequestOutcome& outcome);
  // Publishes the gRPC listener's open and refused connections; call before /metrics is served.
  void AttachConnections(std::shared_ptr<ConnectionLimit> connections);

 private:
  void RefreshGauges() const;
  void PublishModel(const ModelInfo& info);
  void ObserveStages(const RequestOutcome& outcome, const Timings& timings);

  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<const Engine*> engine_{nullptr};
  std::shared_ptr<ConnectionLimit> connections_;
  mutable std::mutex refused_mu_;  // scrapes may run at once; the counter moves by deltas

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& stage_duration_;
  prometheus::Family<prometheus::Counter>& generated_tokens_;
  prometheus::Family<prometheus::Histogram>& tokens_per_second_;
  prometheus::Gauge& in_flight_;
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& image_cache_bytes_;
  prometheus::Gauge& image_cache_entries_;
  prometheus::Gauge& kv_cache_bytes_;
  prometheus::Family<prometheus::Gauge>& model_kv_cache_bytes_;
  prometheus::Family<prometheus::Gauge>& model_image_cache_bytes_;
  prometheus::Gauge& resident_memory_;
  prometheus::Gauge& grpc_connections_;
  prometheus::Counter& grpc_connections_refused_;
  prometheus::Family<prometheus::Gauge>& weight_bytes_;
  prometheus::Family<prometheus::Gauge>& parameters_;
  prometheus::Family<prometheus::Gauge>& load_seconds_;
  prometheus::Family<prometheus::Gauge>& model_info_;
  prometheus::Family<prometheus::Gauge>& quantized_layers_;
  prometheus::Family<prometheus::Gauge>& quantization_sqnr_;
  prometheus::Family<prometheus::Gauge>& quantization_max_abs_error_;
  prometheus::Family<prometheus::Gauge>& quantization_clipped_;
  prometheus::Family<prometheus::Gauge>& quantization_smoothing_;
};

}  // namespace moondream::server
