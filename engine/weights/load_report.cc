// LoadReport (declared in weight_store.h): quantization summary and JSON dump.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "engine/log.h"
#include "engine/weights/weight_store.h"

namespace moondream {

// Name of the only quantization scheme (quant::QuantizePerChannel).
constexpr const char* kInt8Scheme = "int8_per_channel_symmetric";

QuantizationSummary LoadReport::Summary() const {
  QuantizationSummary s;
  double sqnr_sum = 0, clipped = 0, quantized_params = 0;
  int finite = 0;
  s.min_sqnr_db = std::numeric_limits<double>::infinity();
  for (const LayerQuantReport& l : layers) {
    if (!l.smoothing.source.empty()) {  // a site the method looked at, smoothed or not
      const SmoothingStats& sm = l.smoothing;
      if (sm.applied) ++s.smoothed_layers;
      s.shifted_channels += sm.shifted_channels + sm.shifted_keys + sm.shifted_values;
      if (sm.input_spread_before > s.input_spread_before) {
        s.input_spread_before = sm.input_spread_before;
        s.smoothing_worst_layer = l.name;
      }
      s.input_spread_after = std::max(s.input_spread_after, sm.input_spread_after);
      s.kv_spread_before =
          std::max({s.kv_spread_before, sm.key_spread_before, sm.value_spread_before});
      s.kv_spread_after = std::max({s.kv_spread_after, sm.key_spread_after, sm.value_spread_after});
    }
    if (!l.quantized) {
      ++s.full_precision_layers;
      continue;
    }
    ++s.quantized_layers;
    s.max_abs_error = std::max(s.max_abs_error, l.stats.max_abs_error);
    clipped += l.stats.clipped_fraction * static_cast<double>(l.parameters);
    quantized_params += static_cast<double>(l.parameters);
    if (!std::isfinite(l.stats.sqnr_db)) continue;  // exact (error 0): no finite SQNR
    sqnr_sum += l.stats.sqnr_db;
    ++finite;
    if (l.stats.sqnr_db < s.min_sqnr_db) {
      s.min_sqnr_db = l.stats.sqnr_db;
      s.worst_layer = l.name;
    }
  }
  if (s.quantized_layers == 0) {
    QuantizationSummary none;
    none.full_precision_layers = s.full_precision_layers;
    return none;
  }
  s.scheme = kInt8Scheme;
  s.mean_sqnr_db = finite > 0 ? sqnr_sum / finite : 0;
  if (finite == 0) s.min_sqnr_db = 0;
  s.clipped_fraction = quantized_params > 0 ? clipped / quantized_params : 0;
  return s;
}

void LoadReport::WriteJson(const std::string& path) const {
  using Json = nlohmann::ordered_json;
  // Non-finite numbers (an exact layer's SQNR) become null.
  auto num = [](double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); };
  Json j;
  j["parameters"] = parameters;
  j["components"] = Json::array();
  for (const ComponentWeights& c : components) {
    j["components"].push_back({{"component", c.component}, {"precision", c.precision},
                               {"bytes", c.bytes}, {"parameters", c.parameters}});
  }
  const QuantizationSummary s = Summary();
  j["summary"] = {{"scheme", s.scheme}, {"quantized_layers", s.quantized_layers},
                  {"full_precision_layers", s.full_precision_layers}, {"mean_sqnr_db", num(s.mean_sqnr_db)},
                  {"min_sqnr_db", num(s.min_sqnr_db)}, {"worst_layer", s.worst_layer},
                  {"max_abs_error", num(s.max_abs_error)}, {"clipped_fraction", num(s.clipped_fraction)}};
  j["layers"] = Json::array();
  for (const LayerQuantReport& l : layers) {
    Json layer = {{"name", l.name}, {"quantized", l.quantized}, {"parameters", l.parameters},
                  {"sqnr_db", num(l.stats.sqnr_db)}, {"max_abs_error", num(l.stats.max_abs_error)},
                  {"rel_frobenius_error", num(l.stats.rel_frobenius_error)},
                  {"clipped_fraction", num(l.stats.clipped_fraction)}};
    const SmoothingStats& sm = l.smoothing;
    if (!sm.source.empty()) {
      // Estimated per-channel activation range, max/median, before and after the
      // method's folded shifts and scales (docs/quantization.md, "Outlier channels");
      // applied false: the site was left as it is (no channel's scale 2x from the median,
      // no constant above its channel's half-width).
      Json smoothing = {{"source", sm.source}, {"applied", sm.applied},
                        {"input_spread_before", num(sm.input_spread_before)},
                        {"input_spread_after", num(sm.input_spread_after)},
                        {"scale_min", num(sm.scale_min)}, {"scale_max", num(sm.scale_max)},
                        {"shifted_channels", sm.shifted_channels}};
      if (sm.value_spread_before > 0) {
        smoothing["value_spread_before"] = num(sm.value_spread_before);
        smoothing["value_spread_after"] = num(sm.value_spread_after);
        smoothing["shifted_values"] = sm.shifted_values;
      }
      if (sm.key_spread_before > 0) {
        smoothing["key_spread_before"] = num(sm.key_spread_before);
        smoothing["key_spread_after"] = num(sm.key_spread_after);
        smoothing["shifted_keys"] = sm.shifted_keys;
      }
      layer["smoothing"] = smoothing;
    }
    j["layers"].push_back(layer);
  }
  std::ofstream out(path);
  out << j.dump(1) << "\n";
  if (!out) Log(LogLevel::kWarn, "load_report_write_failed", {{"path", path}});
}

}  // namespace moondream
