#include "report.h"

#include <fstream>

#include <fmt/format.h>

namespace uffdpager::bench {

namespace {

using nlohmann::json;

double Num(const json& j, const char* key) { return j.contains(key) ? j[key].get<double>() : 0.0; }

// A table cell for an optional count or ratio: "-" when the variant lacks it.
std::string CountCell(const json& v, const char* key) {
  return v.contains(key) ? fmt::format("{:.0f}", Num(v, key)) : std::string("-");
}
std::string RatioCell(const json& v, const char* key) {
  return v.contains(key) ? fmt::format("{:.2f}x", Num(v, key)) : std::string("-");
}

// Prints a skipped variant's row (its reason); true if it was skipped.
bool PrintIfSkipped(const json& v) {
  if (!v.contains("skipped")) return false;
  fmt::print("{:<28} {}\n", v["name"].get<std::string>(), v["skipped"].get<std::string>());
  return true;
}

// Bytes read from storage, in MiB and per working set: "-" without I/O accounting.
std::string ReadCell(const json& v) {
  return v.contains("median_read_mib") ? fmt::format("{:.1f}", Num(v, "median_read_mib")) : std::string("-");
}

std::string WorkingSetLine(const json& r) {
  return fmt::format("{} working set, {} threads, {} distinct pages ({:.1f} MiB), {} touches",
                     r["working_set"].get<std::string>(), r["threads"].get<int>(), r["distinct_pages"].get<uint64_t>(),
                     Num(r, "distinct_mib"), r["touches"].get<uint64_t>());
}

void PrintRestore(const json& r) {
  fmt::print("\n== Restore: {} ==\n", WorkingSetLine(r));
  fmt::print("{:<28} {:>10} {:>9} {:>8} {:>8} {:>12} {:>13} {:>12} {:>9} {:>9}\n", "variant", "median ms", "read MiB",
             "read/WS", "faults", "vs file warm", "vs on-demand", "fault-around", "prefetch", "cache MiB");
  for (const json& v : r["variants"]) {
    std::string name = v["name"].get<std::string>();
    if (PrintIfSkipped(v)) continue;
    auto count = [&v](const char* key) { return CountCell(v, key); };
    fmt::print("{:<28} {:>10.1f} {:>9} {:>8} {:>8} {:>11.2f}x {:>12.2f}x {:>12} {:>9} {:>9}\n", name,
               Num(v, "median_ms"), ReadCell(v), RatioCell(v, "read_per_working_set"), count("median_faults"),
               Num(v, "ratio_vs_file_warm"), Num(v, "ratio_vs_on_demand"), count("median_fault_around_pages"),
               count("median_prefetch_pages"), count("median_cache_mib"));
  }
}

void PrintLayers(const json& r) {
  fmt::print("\n== Layers: a chain of {} ({}% of the pages per Diff layer) against one file of its bytes; {} ==\n",
             r["chain_depth"].get<unsigned>(), r["layer_percent"].get<unsigned>(), WorkingSetLine(r));
  fmt::print("{:<28} {:>10} {:>9} {:>8} {:>12} {:>9}\n", "variant", "median ms", "read MiB", "read/WS", "vs one file",
             "cache MiB");
  for (const json& v : r["variants"]) {
    if (PrintIfSkipped(v)) continue;
    fmt::print("{:<28} {:>10.1f} {:>9} {:>8} {:>12} {:>9}\n", v["name"].get<std::string>(), Num(v, "median_ms"),
               ReadCell(v), RatioCell(v, "read_per_working_set"), RatioCell(v, "ratio_vs_one_file"),
               CountCell(v, "median_cache_mib"));
  }
}

void PrintStore(const json& r) {
  fmt::print("\n== Store: restores from {} ({}), 0/5/20 ms added per request; {} ==\n", r["object"].get<std::string>(),
             r["flavor"].get<std::string>(), WorkingSetLine(r));
  fmt::print("{:<28} {:>10} {:>9} {:>8} {:>10} {:>9} {:>13}\n", "variant", "median ms", "read MiB", "read/WS",
             "store MiB", "store/WS", "vs file cold");
  for (const json& v : r["variants"]) {
    if (PrintIfSkipped(v)) continue;
    const std::string store =
        v.contains("median_store_mib") ? fmt::format("{:.1f}", Num(v, "median_store_mib")) : std::string("-");
    fmt::print("{:<28} {:>10.1f} {:>9} {:>8} {:>10} {:>9} {:>13}\n", v["name"].get<std::string>(), Num(v, "median_ms"),
               ReadCell(v), RatioCell(v, "read_per_working_set"), store, RatioCell(v, "store_per_working_set"),
               RatioCell(v, "ratio_vs_file_cold"));
  }
}

void PrintCold(const json& c) {
  const json& device = c["readahead_device"];
  fmt::print(
      "\n== Cold storage: the memory file out of the page cache; readahead of {} (its own: {} KiB) set per "
      "variant ==\n",
      device["disk"].get<std::string>(), device["original_kib"].get<uint64_t>());
  for (const json& r : c["results"]) {
    fmt::print("\n-- {}; readahead {} KiB{} --\n", WorkingSetLine(r), r["readahead_kib"].get<uint64_t>(),
               r["readahead_is_device_default"].get<bool>() ? " (the device's own)" : "");
    fmt::print("{:<30} {:>10} {:>9} {:>8} {:>12} {:>11} {:>11} {:>10} {:>8} {:>9} {:>10}\n", "variant", "median ms",
               "read MiB", "read/WS", "vs file_cold", "vs floor 1t", "vs floor 2t", "vs scatter", "faults", "prefetch",
               "record KiB");
    for (const json& v : r["variants"]) {
      if (PrintIfSkipped(v)) continue;
      fmt::print("{:<30} {:>10.1f} {:>9} {:>8} {:>12} {:>11} {:>11} {:>10} {:>8} {:>9} {:>10}\n",
                 v["name"].get<std::string>(), Num(v, "median_ms"), ReadCell(v), RatioCell(v, "read_per_working_set"),
                 RatioCell(v, "ratio_vs_file_cold"), RatioCell(v, "ratio_vs_copy_floor_1_thread"),
                 RatioCell(v, "ratio_vs_copy_floor_2_threads"), RatioCell(v, "ratio_vs_scattered_read_floor"),
                 CountCell(v, "median_faults"), CountCell(v, "median_prefetch_pages"),
                 CountCell(v, "median_record_kib"));
    }
  }
}

void PrintLatency(const json& l) {
  fmt::print("\n== Per-fault latency: {} sequential single-page touches per run, one thread ==\n",
             l["pages_per_run"].get<uint64_t>());
  fmt::print("{:<18} {:>10} {:>10} {:>10} {:>14} {:>14}\n", "handler", "p50 us", "p99 us", "mean us", "p50 vs minimal",
             "p99 vs minimal");
  for (const char* which : {"minimal_handler", "pager_cold", "pager_warm"}) {
    const json& s = l[which];
    std::string p50 = "-", p99 = "-";
    if (std::string(which) != "minimal_handler") {
      p50 = fmt::format("{:.2f}x", Num(l, (std::string(which) + "_ratio_p50_us").c_str()));
      p99 = fmt::format("{:.2f}x", Num(l, (std::string(which) + "_ratio_p99_us").c_str()));
    }
    fmt::print("{:<18} {:>10.1f} {:>10.1f} {:>10.1f} {:>14} {:>14}\n", which, Num(s, "p50_us"), Num(s, "p99_us"),
               Num(s, "mean_us"), p50, p99);
  }
}

void PrintCompletion(const json& c) {
  fmt::print("\n== Completion of the whole snapshot ({:.0f} MiB) ==\n", Num(c, "bytes") / (1 << 20));
  fmt::print("{:<36} {:>10}\n", "method", "GiB/s");
  fmt::print("{:<36} {:>10.2f}\n", "raw UFFDIO_COPY, 2 MiB batches", Num(c, "raw_uffdio_copy_gib_s"));
  fmt::print("{:<36} {:>10.2f}\n", "pager POST /sessions/{id}/complete", Num(c, "pager_complete_gib_s"));
  fmt::print("pager / raw: {:.0f}%\n", 100 * Num(c, "ratio_pager_vs_raw"));
}

void PrintConcurrent(const json& c) {
  fmt::print("\n== {} concurrent restores through one pager ({} threads each, {:.1f} MiB working set) ==\n",
             c["vms"].get<int>(), c["threads_per_vm"].get<int>(), Num(c, "working_set_mib"));
  fmt::print("median total time:               {:.1f} ms\n", Num(c, "median_total_ms"));
  fmt::print("median restore time of one VM:   {:.1f} ms\n", Num(c, "median_vm_restore_ms"));
  fmt::print("backing bytes read / working set: {:.2f}x\n", Num(c, "median_backing_read_per_working_set"));
  fmt::print("pager VmRSS / VmHWM / RssAnon:   {:.1f} / {:.1f} / {:.1f} MiB (cache bound + 64 MiB = {:.0f} MiB)\n",
             Num(c, "median_pager_rss_mib"), Num(c, "median_pager_hwm_mib"), Num(c, "median_pager_rss_anon_mib"),
             Num(c, "rss_bound_mib"));
  if (c.contains("recorded_cold")) {
    const json& r = c["recorded_cold"];
    fmt::print("recorded working set, storage cold, default flags:\n");
    fmt::print("  median total time:               {:.1f} ms\n", Num(r, "median_total_ms"));
    fmt::print("  median restore time of one VM:   {:.1f} ms\n", Num(r, "median_vm_restore_ms"));
    fmt::print("  bytes read from storage / working set: {:.2f}x\n", Num(r, "median_storage_read_per_working_set"));
  }
}

void PrintTinyVmm(const json& t) {
  fmt::print("\n== Restore through tinyvmm: {} MiB KVM guest, {} vCPUs, {} steps each ({} pages, {:.1f} MiB read) ==\n",
             t["guest_mib"].get<uint64_t>(), t["vcpus"].get<int>(), t["steps_per_vcpu"].get<uint64_t>(),
             t["distinct_pages_read"].get<uint64_t>(), Num(t, "distinct_mib_read"));
  fmt::print("{:<28} {:>10} {:>10} {:>10} {:>12} {:>14} {:>10}\n", "variant", "median ms", "load ms", "faults",
             "vs file warm", "vs on-demand", "prefetch");
  for (const json& v : t["variants"]) {
    std::string name = v["name"].get<std::string>();
    if (PrintIfSkipped(v)) continue;
    auto count = [&v](const char* key) { return CountCell(v, key); };
    auto ratio = [&v](const char* key) { return RatioCell(v, key); };
    fmt::print("{:<28} {:>10.1f} {:>10.1f} {:>10} {:>12} {:>14} {:>10}\n", name, Num(v, "median_ms"),
               Num(v, "median_load_ms"), count("median_faults"), ratio("ratio_vs_file_warm"),
               ratio("ratio_vs_on_demand"), count("median_prefetch_pages"));
  }
}

}  // namespace

void PrintTables(const json& results) {
  if (results.contains("restore")) {
    for (const json& r : results["restore"]) PrintRestore(r);
  }
  if (results.contains("fault_latency")) PrintLatency(results["fault_latency"]);
  if (results.contains("completion")) PrintCompletion(results["completion"]);
  if (results.contains("concurrent")) PrintConcurrent(results["concurrent"]);
  if (results.contains("cold")) PrintCold(results["cold"]);
  if (results.contains("tinyvmm")) PrintTinyVmm(results["tinyvmm"]);
  if (results.contains("layers")) PrintLayers(results["layers"]);
  if (results.contains("store")) PrintStore(results["store"]);
  for (const json& note : results.value("notes", json::array())) fmt::print("note: {}\n", note.get<std::string>());
  std::fflush(stdout);
}

Status WriteJson(const json& results, const std::string& path) {
  {
    std::ofstream out(path, std::ios::trunc);
    if (!out) return Status::FromErrno(errno, "open " + path);
    out << results.dump(2) << "\n";
    if (!out.flush()) return Status::FromErrno(errno, "write " + path);
  }
  std::ifstream in(path);
  json back = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (back.is_discarded() || back != results) return Status::Internal(path + " does not read back as the results");
  return Status::Ok();
}

json WorkingSetResults(const WorkingSet& set, json variants) {
  return json{{"working_set", set.name},
              {"threads", set.per_thread.size()},
              {"distinct_pages", set.distinct_pages},
              {"distinct_mib", set.distinct_bytes() / double(kMiB)},
              {"touches", set.total_touches()},
              {"variants", std::move(variants)}};
}

}  // namespace uffdpager::bench
