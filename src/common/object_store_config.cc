#include "common/object_store_config.h"

#include <algorithm>
#include <cstdlib>
#include <random>

namespace uffdpager {

std::chrono::milliseconds RetryPolicy::BackoffAfter(int failed_attempt, double unit_random) const {
  int64_t base = initial_backoff.count();
  for (int i = 1; i < failed_attempt && base < max_backoff.count(); ++i) base *= 2;
  base = std::min<int64_t>(base, max_backoff.count());
  // Half fixed, half random: retries of many requests that failed together
  // spread out, and none comes back sooner than half its step.
  double jitter = std::clamp(unit_random, 0.0, 1.0);
  return std::chrono::milliseconds(base / 2 + static_cast<int64_t>(jitter * static_cast<double>(base - base / 2)));
}

std::chrono::milliseconds RetryPolicy::JitteredBackoffAfter(int failed_attempt) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return BackoffAfter(failed_attempt, std::uniform_real_distribution<double>(0.0, 1.0)(rng));
}

std::string ObjectStoreConfig::Describe() const {
  return "endpoint " + endpoint + " region " + region + (credentials.empty() ? ", unsigned" : ", signed");
}

std::string ObjectStoreConfig::Redact(std::string_view text) const {
  std::string out(text);
  for (const std::string* secret :
       {&credentials.secret_access_key, &credentials.session_token, &credentials.access_key_id}) {
    if (secret->empty()) continue;
    for (size_t at = out.find(*secret); at != std::string::npos; at = out.find(*secret, at)) {
      out.replace(at, secret->size(), "[redacted]");
    }
  }
  return out;
}

Status ValidateEndpoint(std::string_view endpoint) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("endpoint \"" + std::string(endpoint) + "\" " + why);
  };
  std::string_view rest;
  if (endpoint.starts_with("http://")) {
    rest = endpoint.substr(7);
  } else if (endpoint.starts_with("https://")) {
    rest = endpoint.substr(8);
  } else {
    return bad("must start with http:// or https://");
  }
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.empty()) return bad("names no host");
  for (char c : rest) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == ':' || c == '[' || c == ']';
    if (!ok) return bad("must be only scheme, host and port (no path, user or query)");
  }
  return Status::Ok();
}

Result<ObjectStoreConfig> LoadObjectStoreConfig(const ObjectStoreConfigOverrides& overrides,
                                                const EnvironmentLookup& lookup) {
  auto env = [&](const char* name) -> std::optional<std::string> {
    const char* v = lookup ? lookup(name) : std::getenv(name);
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
  ObjectStoreConfig config;
  if (overrides.endpoint) {
    config.endpoint = *overrides.endpoint;
  } else if (auto e = env("AWS_ENDPOINT_URL")) {
    config.endpoint = *e;
  } else {
    return Status::InvalidArgument("no object store endpoint: set AWS_ENDPOINT_URL (http[s]://HOST[:PORT])");
  }
  UFFD_RETURN_IF_ERROR(ValidateEndpoint(config.endpoint));
  if (config.endpoint.ends_with('/')) config.endpoint.pop_back();

  if (overrides.region) {
    config.region = *overrides.region;
  } else if (auto r = env("AWS_REGION")) {
    config.region = *r;
  } else if (auto d = env("AWS_DEFAULT_REGION")) {
    config.region = *d;
  }
  if (config.region.empty() || config.region.find_first_of(":/ \t\r\n") != std::string::npos) {
    return Status::InvalidArgument("region \"" + config.region + "\" is empty or holds ':', '/' or a space");
  }

  if (overrides.credentials) {
    config.credentials = *overrides.credentials;
  } else {
    auto id = env("AWS_ACCESS_KEY_ID");
    auto secret = env("AWS_SECRET_ACCESS_KEY");
    if (id.has_value() != secret.has_value()) {
      return Status::InvalidArgument(id ? "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
                                        : "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
    }
    if (id) config.credentials = {*id, *secret, env("AWS_SESSION_TOKEN").value_or("")};
  }
  const ObjectStoreCredentials& c = config.credentials;
  if (c.access_key_id.empty() != c.secret_access_key.empty()) {
    return Status::InvalidArgument("credentials need both an access key id and a secret access key");
  }
  if (c.access_key_id.empty() && !c.session_token.empty()) {
    return Status::InvalidArgument("a session token needs an access key id and a secret access key");
  }
  // They go into HTTP headers: a line break would split one.
  for (const std::string* field : {&c.access_key_id, &c.secret_access_key, &c.session_token}) {
    if (field->find_first_of("\r\n") != std::string::npos || field->find('\0') != std::string::npos) {
      return Status::InvalidArgument("a credential holds a line break or NUL");
    }
  }
  if (c.access_key_id.find(':') != std::string::npos) {
    return Status::InvalidArgument("the access key id holds ':'");
  }
  return config;
}

}  // namespace uffdpager
