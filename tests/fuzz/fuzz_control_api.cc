// Fuzzes the control API as a client on control.sock can drive it: input is
// "METHOD PATH\n" followed by the body. Requests go through the real routing,
// JSON parsing and validation into a real registry (sessions get real
// sockets and threads), with backing files confined to one directory by the
// real BackingPathPolicy. Every answer must be a known status with a JSON
// object body (or none, for 204), and nothing may escape the sessions dir.
// Beneath the root lie hostile files too (a FIFO, a symlink to it, a
// directory): a create naming one must be refused, never block. A refused
// create's error never repeats a control character (it would forge log lines).
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "pager/access/backing_path_policy.h"
#include "pager/daemon/control_api.h"
#include "pager/metrics/metrics_registry.h"
#include "pager/serving/session_registry.h"
#include "pager/storage/page_cache.h"

namespace {

using namespace uffdpager;

void Require(bool condition) {
  if (!condition) __builtin_trap();
}

// The pager's state that outlives one input. The seed corpus names
// /tmp/uffdpager-fuzz/snaps/mem, the one memory file the policy allows, and
// the hostile files next to it: fifo, link-to-fifo, dir.
struct World {
  std::string root = "/tmp/uffdpager-fuzz";
  std::string sessions_dir;
  PageCache cache{64ULL << 20};
  MetricsRegistry metrics;
  BackingPathPolicy policy;
  std::unique_ptr<SessionRegistry> registry;

  World() {
    spdlog::set_level(spdlog::level::off);
    std::filesystem::create_directories(root + "/snaps");
    sessions_dir = root + "/sessions-" + std::to_string(::getpid());
    std::filesystem::create_directories(sessions_dir);
    std::ofstream(root + "/snaps/mem", std::ios::trunc) << std::string(1 << 16, 'x');
    std::filesystem::create_directories(root + "/snaps/dir");
    if (::mkfifo((root + "/snaps/fifo").c_str(), 0600) != 0) Require(errno == EEXIST);
    std::error_code ec;
    std::filesystem::create_symlink("fifo", root + "/snaps/link-to-fifo", ec);
    auto p = BackingPathPolicy::Create({root + "/snaps"});
    Require(p.ok());
    policy = std::move(*p);
    SessionEnvironment env;
    env.cache = &cache;
    env.backing_policy = &policy;
    env.metrics = &metrics;
    env.handshake_timeout = std::chrono::milliseconds(10);
    registry = std::make_unique<SessionRegistry>(sessions_dir, env);
  }
};

World& TheWorld() {
  static World* world = new World();  // lives until exit; sessions closed per input
  return *world;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = TheWorld();
  std::string input(reinterpret_cast<const char*>(data), size);
  size_t eol = input.find('\n');
  std::string line = input.substr(0, eol);
  size_t space = line.find(' ');
  HttpRequest request;
  request.method = line.substr(0, space);
  request.path = space == std::string::npos ? "" : line.substr(space + 1);
  request.body = eol == std::string::npos ? "" : input.substr(eol + 1);

  std::atomic<bool> draining{false};
  ControlApiContext ctx;
  ctx.registry = w.registry.get();
  ctx.cache = &w.cache;
  ctx.draining = &draining;
  ctx.metrics = &w.metrics;
  ctx.version_key = "fuzz";
  ctx.started_at = std::chrono::steady_clock::now();
  ControlApi api(std::move(ctx));

  HttpResponse response = api.Handle(request);
  // 400 for a bad body, a missing or hostile backing file (FIFO, device,
  // directory), a path or id too long; 403 for a backing path outside the
  // policy's root or a system call refused for lack of permission (chown
  // when not root); 409 for a non-socket file where a session socket goes;
  // 500 only for another system call the environment refused.
  static const int kKnown[] = {200, 204, 400, 403, 404, 405, 409, 413, 500, 503};
  Require(std::find(std::begin(kKnown), std::end(kKnown), response.status) != std::end(kKnown));
  if (response.status == 204) {
    Require(response.body.empty());
  } else if (response.content_type == "application/json") {
    auto body = nlohmann::json::parse(response.body, nullptr, false);
    Require(body.is_object());
    if (response.status >= 400) Require(body.contains("error") && body["error"].is_string());
    if (response.status >= 400 && request.method == "POST" && request.path == "/sessions") {
      for (unsigned char c : body["error"].get<std::string>()) Require(c >= 0x20 && c != 0x7f);
    }
  }
  // Sockets are only ever created inside the sessions directory.
  for (const auto& s : w.registry->List()) {
    Require(std::filesystem::path(s->socket_path()).parent_path() == w.sessions_dir);
  }
  w.registry->CloseAll("fuzz input done");
  return 0;
}
