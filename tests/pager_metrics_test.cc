// GET /metrics: a well-formed Prometheus page whose counters, gauges,
// latency histograms and per-cache-key counters follow real faults; and
// --metrics-addr, which serves only that page, only on loopback; and the
// Grafana dashboard, whose queries may name only metrics this page has.
#include <fstream>
#include <functional>
#include <regex>
#include <set>

#include "common/http_client.h"
#include "support/pager_fixture.h"
#include "support/prometheus_text.h"

namespace uffdpager::testing::metrics_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {4 * kMiB, 2 * kMiB};
constexpr uint64_t kPages = 6 * kMiB / 4096;

class PagerMetricsTest : public PagerFixture {
 protected:
  PrometheusPage Scrape() {
    HttpClient http(ControlSocket());
    auto r = http.Send("GET", "/metrics");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->content_type.find("text/plain; version=0.0.4"), 0u) << r->content_type;
    auto page = ParsePrometheusText(r->body);
    EXPECT_TRUE(page.ok()) << page.status().ToString() << "\n" << r->body;
    return page.ok() ? *page : PrometheusPage{};
  }

  // Restores a VM of `snapshot` under `cache_key`, reads every page from one
  // thread (one fault per page) and checks the bytes.
  void RestoreAndTouch(const std::string& id, const std::string& snapshot, const std::string& cache_key) {
    auto vm = VmmStandIn::Restore(CreateSession(id, snapshot, cache_key), kRegions);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchAllPages((*vm)->memory, 1);
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snapshot));
    vms_.push_back(std::move(*vm));
  }

  static void ExpectHistogramConsistent(const PrometheusPage& page, const std::string& name) {
    // Buckets are cumulative in bound order; +Inf equals the count.
    double last = 0;
    for (const char* le : {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1"}) {
      double v = page.Get(name + "_bucket{le=\"" + le + "\"}");
      ASSERT_GE(v, 0) << name << " has no bucket le=" << le;
      EXPECT_GE(v, last) << name << " buckets are not cumulative at le=" << le;
      last = v;
    }
    EXPECT_GE(page.Get(name + "_bucket{le=\"+Inf\"}"), last);
    EXPECT_EQ(page.Get(name + "_bucket{le=\"+Inf\"}"), page.Get(name + "_count"));
    EXPECT_EQ(page.types.at(name), "histogram");
  }

  std::vector<std::unique_ptr<VmmStandIn>> vms_;
};

TEST_F(PagerMetricsTest, CountersHistogramsAndCacheKeyHitRatesFollowRealFaults) {
  StartPager();
  std::string a = MakeSnapshot("a.mem", 6 * kMiB, 51);
  std::string b = MakeSnapshot("b.mem", 6 * kMiB, 52);

  PrometheusPage before = Scrape();
  EXPECT_EQ(before.Get("uffdpager_faults_total"), 0);
  EXPECT_EQ(before.Get("uffdpager_fault_service_seconds_count"), 0);
  EXPECT_EQ(before.Get("uffdpager_cache_max_bytes"), double(1ULL << 30));
  bool has_info = false;
  for (const auto& [series, value] : before.samples) {
    has_info |= series.rfind("uffdpager_info{version_key=\"test\",pager_version=", 0) == 0 && value == 1;
  }
  EXPECT_TRUE(has_info);
  EXPECT_EQ(before.types.at("uffdpager_faults_total"), "counter");
  EXPECT_EQ(before.types.at("uffdpager_cache_bytes"), "gauge");

  // First restore of key "alpha": every page a miss, read from disk once.
  RestoreAndTouch("a1", a, "alpha");
  PrometheusPage first = Scrape();
  EXPECT_EQ(first.Get("uffdpager_faults_total"), double(kPages));
  EXPECT_EQ(first.Get("uffdpager_faults_total"), double(Stat("faults")));
  EXPECT_EQ(first.Get("uffdpager_fault_service_seconds_count"), double(kPages)) << "one sample per served fault";
  EXPECT_GT(first.Get("uffdpager_fault_service_seconds_sum"), 0);
  EXPECT_EQ(first.Get("uffdpager_backing_read_seconds_count"), double(kPages)) << "one sample per backing read";
  EXPECT_EQ(first.Get("uffdpager_backing_read_bytes_total"), double(kPages * 4096));
  EXPECT_EQ(first.Get("uffdpager_copy_seconds_count"),
            first.Get("uffdpager_pages_copied_total") + first.Get("uffdpager_zero_pages_total"))
      << "one sample per fill ioctl";
  EXPECT_GT(first.Get("uffdpager_zero_pages_total"), 0);
  EXPECT_EQ(first.Get("uffdpager_cache_key_misses_total{cache_key=\"alpha\"}"), double(kPages));
  EXPECT_EQ(first.Get("uffdpager_cache_key_hits_total{cache_key=\"alpha\"}"), 0);
  EXPECT_EQ(first.Get("uffdpager_cache_items"), double(kPages));
  EXPECT_EQ(first.Get("uffdpager_sessions{state=\"serving\"}"), 1);
  EXPECT_EQ(first.Get("uffdpager_sessions{state=\"waiting\"}"), 0);
  for (const char* h :
       {"uffdpager_fault_service_seconds", "uffdpager_backing_read_seconds", "uffdpager_copy_seconds"}) {
    ExpectHistogramConsistent(first, h);
  }

  // Second restore of "alpha": all hits, no disk; a restore of another key
  // ("beta", another file) counts on its own.
  RestoreAndTouch("a2", a, "alpha");
  RestoreAndTouch("b1", b, "beta");
  PrometheusPage later = Scrape();
  EXPECT_EQ(later.Get("uffdpager_cache_key_hits_total{cache_key=\"alpha\"}"), double(kPages));
  EXPECT_EQ(later.Get("uffdpager_cache_key_misses_total{cache_key=\"alpha\"}"), double(kPages));
  EXPECT_EQ(later.Get("uffdpager_cache_key_faults_total{cache_key=\"alpha\"}"), double(2 * kPages));
  EXPECT_EQ(later.Get("uffdpager_cache_key_backing_read_bytes_total{cache_key=\"alpha\"}"), double(kPages * 4096));
  EXPECT_EQ(later.Get("uffdpager_cache_key_hits_total{cache_key=\"beta\"}"), 0);
  EXPECT_EQ(later.Get("uffdpager_cache_key_misses_total{cache_key=\"beta\"}"), double(kPages));
  EXPECT_EQ(later.Get("uffdpager_faults_total"), double(3 * kPages));
  EXPECT_EQ(later.Get("uffdpager_backing_read_seconds_count"), double(2 * kPages)) << "a hit must not read";
  EXPECT_EQ(later.Get("uffdpager_cache_hits_total"), double(kPages));
  EXPECT_EQ(later.Get("uffdpager_sessions{state=\"serving\"}"), 3);

  // Closing a session moves the gauges.
  ASSERT_TRUE(pager_->client().CloseSession("a1").ok());
  EXPECT_EQ(Scrape().Get("uffdpager_sessions{state=\"serving\"}"), 2);
}

TEST_F(PagerMetricsTest, AnyCacheKeyYieldsAWellFormedPage) {
  StartPager();
  std::string a = MakeSnapshot("a.mem", 6 * kMiB, 53);
  // Quotes and backslashes must be escaped in a label. (A newline would be
  // too, but a cache key with a control character is refused at create.)
  const std::string weird = "tenant \"x\"\\snap line2";
  RestoreAndTouch("w", a, weird);
  PrometheusPage page = Scrape();  // parsing fails on a badly escaped label
  EXPECT_EQ(page.Get("uffdpager_cache_key_misses_total{cache_key=\"" + weird + "\"}"), double(kPages));

  // Client bytes that are not UTF-8 (here in a path) still get a JSON answer.
  HttpClient http(ControlSocket());
  auto missing = http.Send("GET", "/sessions/k\xff\xfe");
  ASSERT_TRUE(missing.ok()) << missing.status().ToString();
  EXPECT_EQ(missing->status, 404) << missing->body;
  EXPECT_TRUE(nlohmann::json::accept(missing->body)) << missing->body;
}

TEST_F(PagerMetricsTest, MetricsAddrServesOnlyMetricsOnLoopback) {
  StartPager({.extra_args = {"--metrics-addr", "127.0.0.1:0"}});
  HttpClient http(ControlSocket());
  auto health = http.Send("GET", "/health");
  ASSERT_TRUE(health.ok());
  std::string addr = nlohmann::json::parse(health->body).value("metrics_addr", "");
  ASSERT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << health->body;
  EXPECT_NE(addr, "127.0.0.1:0") << "the real port must be reported";

  std::string a = MakeSnapshot("a.mem", 6 * kMiB, 54);
  RestoreAndTouch("t", a, "tcp-key");
  auto got = HttpGetOverTcp(addr, "/metrics");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->first, 200);
  auto page = ParsePrometheusText(got->second);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(page->Get("uffdpager_faults_total"), double(kPages));
  EXPECT_EQ(page->Get("uffdpager_cache_key_misses_total{cache_key=\"tcp-key\"}"), double(kPages));

  // The control API is not reachable over TCP.
  for (auto [method, path] : {std::pair{"GET", "/health"},
                              {"GET", "/sessions"},
                              {"POST", "/sessions"},
                              {"POST", "/drain"},
                              {"POST", "/metrics"}}) {
    auto r = HttpGetOverTcp(addr, path, method);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_GE(r->first, 404) << method << " " << path << " answered over TCP: " << r->second;
  }
  EXPECT_FALSE(pager_->client().Health()->draining);
}

TEST_F(PagerMetricsTest, NonLoopbackMetricsAddrsAreRefusedAtStart) {
  for (std::string addr : {"0.0.0.0:0", "10.1.2.3:9464", "[::]:0", "example.com:80", "127.0.0.1", "127.0.0.1:70000"}) {
    PagerProcessOptions options;
    options.version_key = "refuse";
    options.extra_args = {"--metrics-addr", addr};
    auto p = TestPager::Start(dir_.path(), options);
    EXPECT_FALSE(p.ok()) << addr << " was accepted";
    auto log = ReadFileBytes(dir_ / "pager-refuse.log");
    EXPECT_NE(std::string(log.begin(), log.end()).find("--metrics-addr"), std::string::npos) << addr;
  }
  // ::1 is loopback too.
  StartPager({.extra_args = {"--metrics-addr", "[::1]:0"}});
  HttpClient http(ControlSocket());
  std::string addr = nlohmann::json::parse(http.Send("GET", "/health")->body).value("metrics_addr", "");
  ASSERT_EQ(addr.rfind("[::1]:", 0), 0u) << addr;
  auto got = HttpGetOverTcp(addr, "/metrics");
  if (!got.ok() && got.status().error_number() == EADDRNOTAVAIL) GTEST_SKIP() << "no IPv6 loopback here";
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->first, 200);
}

// Every metric docs/grafana/uffd-pager-dashboard.json queries (panels and
// template variables) is on the page Prometheus scrapes from --metrics-addr,
// once a restore has run: a renamed metric fails here, not silently on a
// host's dashboard.
TEST_F(PagerMetricsTest, GrafanaDashboardQueriesOnlyMetricsThePagerServes) {
  std::ifstream in(UFFDPAGER_GRAFANA_DASHBOARD);
  ASSERT_TRUE(in) << UFFDPAGER_GRAFANA_DASHBOARD;
  nlohmann::json dashboard = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded()) << UFFDPAGER_GRAFANA_DASHBOARD << " is not JSON";

  // Its data source is a variable, so it imports into any Grafana.
  bool has_datasource_variable = false;
  for (const auto& v : dashboard["templating"]["list"]) {
    has_datasource_variable |= v.value("type", "") == "datasource" && v.value("query", "") == "prometheus";
  }
  EXPECT_TRUE(has_datasource_variable);

  // Every query string anywhere in it: panel targets, variable queries.
  std::vector<std::string> queries;
  std::function<void(const nlohmann::json&)> collect = [&](const nlohmann::json& j) {
    if (j.is_object()) {
      for (const auto& [key, value] : j.items()) {
        if ((key == "expr" || key == "definition") && value.is_string()) queries.push_back(value.get<std::string>());
        collect(value);
      }
    } else if (j.is_array()) {
      for (const auto& value : j) collect(value);
    }
  };
  collect(dashboard);
  std::set<std::string> names;
  const std::regex metric("uffdpager_[a-zA-Z0-9_]+");
  for (const auto& q : queries) {
    for (auto it = std::sregex_iterator(q.begin(), q.end(), metric); it != std::sregex_iterator(); ++it) {
      names.insert(it->str());
    }
  }
  ASSERT_GE(names.size(), 10u) << "the dashboard's queries were not found";

  StartPager({.extra_args = {"--metrics-addr", "127.0.0.1:0"}});
  std::string a = MakeSnapshot("a.mem", 6 * kMiB, 55);
  RestoreAndTouch("dash", a, "dashboard-key");
  HttpClient http(pager_->root_dir() + "/control.sock");
  auto health = http.Send("GET", "/health");
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  std::string addr = nlohmann::json::parse(health->body).value("metrics_addr", "");
  auto got = HttpGetOverTcp(addr, "/metrics");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  auto page = ParsePrometheusText(got->second);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  for (const auto& name : names) {
    bool served = false;
    for (const auto& [series, value] : page->samples) {
      served |= series == name || series.rfind(name + "{", 0) == 0;
    }
    EXPECT_TRUE(served) << "the dashboard queries " << name << ", which /metrics does not serve";
  }
}

}  // namespace
}  // namespace uffdpager::testing::metrics_test
