// restore_bench's store section: restores whose memory is an object in
// S3-compatible storage, against Firecracker's File backend on a local copy
// of the same bytes with a cold page cache, in one run. For each added
// latency (0, 5 and 20 ms per exchange, by a delaying TCP relay between the
// pager and the store, started here: this kernel has no netem):
//   store_<N>ms_never_seen  a fresh pager on an empty data directory, as on a
//                           host that never saw the snapshot, and nothing
//                           published beside the object (the first restore in
//                           the fleet): every page the working set needs
//                           comes from the store in chunks;
//   store_<N>ms_published   a fresh pager on another empty data directory,
//                           with the working set never_seen recorded
//                           published beside the object: a host that never
//                           saw the snapshot, after one that did;
//   store_<N>ms_recorded    a fresh pager on the data directory never_seen
//                           left: its disk tier (the chunks it fetched) and
//                           what it recorded, with the page cache cold;
//   store_<N>ms_never_seen_no_readahead
//                           never_seen with --object-readahead-chunks 0: one
//                           chunk per round trip, what readahead is measured
//                           against.
// Each sample has its time, its bytes read from local storage and its bytes
// fetched from the store; every restore verifies its page sample against the
// local copy. The object is uploaded once per run of the benchmark.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "cold_restore.h"
#include "common/object_store_client.h"
#include "common/object_store_config.h"
#include "common/unique_fd.h"
#include "report.h"
#include "restore_steps.h"
#include "restore_variants.h"
#include "stats.h"
#include "support/tcp_relay.h"

namespace uffdpager::bench {

namespace {

using nlohmann::json;
using testing::TcpRelay;

const std::vector<int> kDelaysMs = {0, 5, 20};
constexpr const char* kBucket = "restore-bench";

// Sets an environment variable for the pagers started while it lives (they
// inherit this process's environment), and puts the old value back.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// The TCP port of an endpoint "http://HOST:PORT".
Result<uint16_t> EndpointPort(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon < endpoint.find("://") + 3) {
    return Status::InvalidArgument("AWS_ENDPOINT_URL " + endpoint + " names no port; the relay needs one");
  }
  const int port = std::atoi(endpoint.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return Status::InvalidArgument("AWS_ENDPOINT_URL " + endpoint + ": bad port");
  return static_cast<uint16_t>(port);
}

std::string VariantName(int delay_ms, const char* condition) {
  return fmt::format("store_{}ms_{}", delay_ms, condition);
}

}  // namespace

Result<json> RunStoreRestore(const BenchConfig& config, const WorkingSet& set, std::string* skipped) {
  if (std::getenv("AWS_ENDPOINT_URL") == nullptr) {
    *skipped =
        "AWS_ENDPOINT_URL is not set (start a store: scripts/ceph-rgw.sh start DIR, then eval \"$(scripts/"
        "ceph-rgw.sh env DIR)\")";
    return json();
  }
  auto store_config = LoadObjectStoreConfig();
  if (!store_config.ok()) return store_config.status().WithContext("the store of the AWS_* environment");
  auto port = EndpointPort(store_config->endpoint);
  if (!port.ok()) return port.status();
  auto flavor = DefaultFlavor();
  if (!flavor.ok()) return flavor.status();
  PagerFlavor no_readahead = *flavor;
  no_readahead.name += "_no_readahead";
  no_readahead.extra_args.insert(no_readahead.extra_args.end(), {"--object-readahead-chunks", "0"});

  // The snapshot's bytes as one object.
  ObjectStoreClient client(*store_config);
  UFFD_RETURN_IF_ERROR(client.CreateBucket(kBucket).WithContext("create bucket " + std::string(kBucket)));
  const ObjectUrl object{kBucket, fmt::format("snapshot-{}mib", config.memory_bytes >> 20)};
  {
    UniqueFd fd(::open(config.snapshot_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return Status::FromErrno(errno, "open " + config.snapshot_path);
    auto put = client.Put(object, fd.get(), config.memory_bytes);
    if (!put.ok()) return put.status().WithContext("upload the snapshot");
  }
  BenchConfig from_store = config;
  from_store.snapshot_url = object.ToString();

  // Where the pagers publish the working set they record
  // (published_working_set.h); removed where a variant must not find one.
  const ObjectUrl published{object.bucket, object.key + ".workingset"};
  auto unpublish = [&] {
    Status st = client.Delete(published);
    return st.ok() || st.code() == ErrorCode::kNotFound ? Status::Ok()
                                                        : st.WithContext("remove the published working set");
  };

  std::vector<Series> series = {{"file_cold"}};
  for (int delay : kDelaysMs) {
    series.push_back({VariantName(delay, "never_seen")});
    series.push_back({VariantName(delay, "published")});
    series.push_back({VariantName(delay, "recorded")});
    series.push_back({VariantName(delay, "never_seen_no_readahead")});
  }
  for (unsigned run = 0; run < config.runs; ++run) {
    UFFD_RETURN_IF_ERROR(MakeStorageCold(config, {}, 0));
    auto file = TimeFileRestore(config, set);
    if (!file.ok()) return file.status().WithContext("file_cold");
    FindSeries(series, "file_cold").Add(*file);
    for (int delay : kDelaysMs) {
      // Half each way: `delay` added to every request's round trip.
      auto relay = TcpRelay::Start(*port, std::chrono::microseconds(delay * 1000 / 2));
      if (!relay.ok()) return relay.status().WithContext("start the delaying relay");
      ScopedEnv endpoint("AWS_ENDPOINT_URL", (*relay)->endpoint());
      // Short tags: session socket paths must fit in 108 bytes.
      const std::string tag = fmt::format("store-{}", delay);
      const std::string id = fmt::format("store-{}-{}", delay, run);
      UFFD_RETURN_IF_ERROR(unpublish());
      auto never_seen = ColdPagerRestore(from_store, *flavor, tag, PagerDataDir::kFresh, id + "-new", set);
      if (!never_seen.ok()) return never_seen.status();
      FindSeries(series, VariantName(delay, "never_seen")).Add(*never_seen);
      // Its pager stopped after publishing what it recorded.
      if (auto head = client.Head(published); !head.ok()) {
        return head.status().WithContext("the working set never_seen recorded was not published");
      }
      auto from_fleet = ColdPagerRestore(from_store, *flavor, tag + "-p", PagerDataDir::kFresh, id + "-pub", set);
      if (!from_fleet.ok()) return from_fleet.status();
      FindSeries(series, VariantName(delay, "published")).Add(*from_fleet);
      auto recorded = ColdPagerRestore(from_store, *flavor, tag, PagerDataDir::kKeep, id + "-rec", set);
      if (!recorded.ok()) return recorded.status();
      FindSeries(series, VariantName(delay, "recorded")).Add(*recorded);
      UFFD_RETURN_IF_ERROR(unpublish());
      auto one_by_one = ColdPagerRestore(from_store, no_readahead, tag + "-1", PagerDataDir::kFresh, id + "-one", set);
      if (!one_by_one.ok()) return one_by_one.status();
      FindSeries(series, VariantName(delay, "never_seen_no_readahead")).Add(*one_by_one);
    }
    Progress(fmt::format("store {} run {}/{} done", set.name, run + 1, config.runs));
  }

  const double file_cold = Median(FindSeries(series, "file_cold").ms);
  json variants = json::array();
  for (const Series& s : series) {
    json j = s.ToJson(set.distinct_bytes());
    if (s.name != "file_cold") j["ratio_vs_file_cold"] = Median(s.ms) / file_cold;
    variants.push_back(std::move(j));
  }
  json out = WorkingSetResults(set, std::move(variants));
  out["object"] = object.ToString();
  out["delays_ms"] = kDelaysMs;
  out["flavor"] = flavor->name;
  return out;
}

}  // namespace uffdpager::bench
