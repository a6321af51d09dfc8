// Parsing the Prometheus text format back, strictly enough that a malformed
// page fails the test: every sample belongs to a family announced by HELP and
// TYPE, names and labels are well-formed, values are numbers.
#pragma once

#include <map>
#include <string>

#include "uffdpager/status.h"

namespace uffdpager::testing {

struct PrometheusPage {
  // "name" or "name{label=\"value\",...}" (label values unescaped, in the
  // order written) -> value.
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;  // family -> counter, gauge, histogram

  // The value of `series`, or -1 if absent.
  double Get(const std::string& series) const {
    auto it = samples.find(series);
    return it == samples.end() ? -1 : it->second;
  }
};

Result<PrometheusPage> ParsePrometheusText(const std::string& text);

// GET `path` over plain HTTP/1.0 on TCP HOST:PORT ("127.0.0.1:9464", "[::1]:80");
// returns the status code and body.
Result<std::pair<int, std::string>> HttpGetOverTcp(const std::string& address, const std::string& path,
                                                   const std::string& method = "GET");

}  // namespace uffdpager::testing
