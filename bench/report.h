// Presenting restore_bench's results: the human tables on stdout and the
// JSON file. The JSON is the record; the tables are a reading of it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"
#include "workload.h"

namespace uffdpager::bench {

// Prints one table per measurement present in `results`.
void PrintTables(const nlohmann::json& results);

// One measurement's record: what `set` is, and its `variants`.
nlohmann::json WorkingSetResults(const WorkingSet& set, nlohmann::json variants);

// Writes `results` to `path` (pretty-printed) and, to be sure what was
// written is what a reader gets, parses it back.
Status WriteJson(const nlohmann::json& results, const std::string& path);

}  // namespace uffdpager::bench
