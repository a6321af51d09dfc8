#include "pager/metrics/prometheus_exposition.h"

#include <fmt/format.h>

namespace uffdpager {

namespace {

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Seconds(uint64_t ns) { return fmt::format("{}", static_cast<double>(ns) / 1e9); }

}  // namespace

void PrometheusWriter::Family(std::string_view name, std::string_view help, std::string_view type) {
  if (family_ == name) return;
  family_ = name;
  // HELP text escapes only backslash and newline.
  std::string escaped;
  for (char c : help) escaped += c == '\\' ? "\\\\" : c == '\n' ? "\\n" : std::string(1, c);
  out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escaped, name, type);
}

void PrometheusWriter::Sample(std::string_view name, const MetricLabels& labels, const std::string& value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i > 0) out_ += ',';
      out_ += fmt::format("{}=\"{}\"", labels[i].first, EscapeLabelValue(labels[i].second));
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void PrometheusWriter::Counter(std::string_view name, std::string_view help, uint64_t value,
                               const MetricLabels& labels) {
  Family(name, help, "counter");
  Sample(name, labels, std::to_string(value));
}

void PrometheusWriter::Gauge(std::string_view name, std::string_view help, double value, const MetricLabels& labels) {
  Family(name, help, "gauge");
  Sample(name, labels, fmt::format("{}", value));
}

void PrometheusWriter::Histogram(std::string_view name, std::string_view help,
                                 const LatencyHistogram::Snapshot& snapshot) {
  Family(name, help, "histogram");
  std::string bucket = std::string(name) + "_bucket";
  for (size_t i = 0; i < LatencyHistogram::kBoundsNs.size(); ++i) {
    Sample(bucket, {{"le", Seconds(LatencyHistogram::kBoundsNs[i])}}, std::to_string(snapshot.cumulative[i]));
  }
  Sample(bucket, {{"le", "+Inf"}}, std::to_string(snapshot.count));
  Sample(std::string(name) + "_sum", {}, Seconds(snapshot.sum_ns));
  Sample(std::string(name) + "_count", {}, std::to_string(snapshot.count));
}

}  // namespace uffdpager
