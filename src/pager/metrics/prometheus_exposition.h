// PrometheusWriter: writes metrics in the Prometheus text exposition format
// (version 0.0.4): one "# HELP" and "# TYPE" per family, then its samples.
// Label values are escaped (backslash, double quote, newline), so any cache
// key, whatever its bytes, yields a well-formed page.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pager/metrics/latency_histogram.h"

namespace uffdpager {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class PrometheusWriter {
 public:
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

  // Samples of one family must be written one after another.
  void Counter(std::string_view name, std::string_view help, uint64_t value, const MetricLabels& labels = {});
  void Gauge(std::string_view name, std::string_view help, double value, const MetricLabels& labels = {});
  // A histogram of nanosecond samples, exposed in seconds.
  void Histogram(std::string_view name, std::string_view help, const LatencyHistogram::Snapshot& snapshot);

  const std::string& text() const { return out_; }

 private:
  void Family(std::string_view name, std::string_view help, std::string_view type);
  void Sample(std::string_view name, const MetricLabels& labels, const std::string& value);

  std::string out_;
  std::string family_;  // the family whose samples are being written
};

}  // namespace uffdpager
