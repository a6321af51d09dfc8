#include "common/object_store_config.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/object_exchange.h"

namespace uffdpager {
namespace {

class FakeEnv {
 public:
  explicit FakeEnv(std::map<std::string, std::string> vars) : vars_(std::move(vars)) {}
  EnvironmentLookup lookup() const {
    return [this](const char* name) -> const char* {
      auto it = vars_.find(name);
      return it == vars_.end() ? nullptr : it->second.c_str();
    };
  }

 private:
  std::map<std::string, std::string> vars_;
};

const std::map<std::string, std::string> kFull = {
    {"AWS_ENDPOINT_URL", "http://127.0.0.1:7480/"},
    {"AWS_REGION", "eu-west-3"},
    {"AWS_DEFAULT_REGION", "ap-south-1"},
    {"AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000"},
    {"AWS_SECRET_ACCESS_KEY", "secret/with+chars=="},
    {"AWS_SESSION_TOKEN", "session-token-value"},
};

TEST(ObjectStoreConfigTest, ReadsTheEnvironment) {
  FakeEnv env(kFull);
  Result<ObjectStoreConfig> c = LoadObjectStoreConfig({}, env.lookup());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->endpoint, "http://127.0.0.1:7480");  // trailing '/' dropped
  EXPECT_EQ(c->region, "eu-west-3");                // AWS_REGION before AWS_DEFAULT_REGION
  EXPECT_EQ(c->credentials.access_key_id, "AKIAEXAMPLEKEYID0000");
  EXPECT_EQ(c->credentials.secret_access_key, "secret/with+chars==");
  EXPECT_EQ(c->credentials.session_token, "session-token-value");
}

TEST(ObjectStoreConfigTest, CallerOverridesWinOverTheEnvironment) {
  FakeEnv env(kFull);
  ObjectStoreConfigOverrides o{.endpoint = "https://s3.example.com",
                               .region = "us-west-2",
                               .credentials = ObjectStoreCredentials{"OTHERKEY", "othersecret", ""}};
  Result<ObjectStoreConfig> c = LoadObjectStoreConfig(o, env.lookup());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->endpoint, "https://s3.example.com");
  EXPECT_EQ(c->region, "us-west-2");
  EXPECT_EQ(c->credentials.access_key_id, "OTHERKEY");
  // Overridden credentials are taken whole: no session token from the environment.
  EXPECT_EQ(c->credentials.session_token, "");
}

TEST(ObjectStoreConfigTest, DefaultsAndFallbacks) {
  FakeEnv env(
      std::map<std::string, std::string>{{"AWS_ENDPOINT_URL", "http://h:1"}, {"AWS_DEFAULT_REGION", "ap-south-1"}});
  Result<ObjectStoreConfig> c = LoadObjectStoreConfig({}, env.lookup());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->region, "ap-south-1");
  EXPECT_TRUE(c->credentials.empty());  // unsigned requests
  FakeEnv bare(std::map<std::string, std::string>{{"AWS_ENDPOINT_URL", "http://h:1"}});
  EXPECT_EQ(LoadObjectStoreConfig({}, bare.lookup())->region, "us-east-1");
}

TEST(ObjectStoreConfigTest, RefusesMissingOrMalformedValuesWithoutShowingSecrets) {
  auto without = [](const char* name) {
    auto m = kFull;
    m.erase(name);
    return m;
  };
  struct Case {
    std::map<std::string, std::string> vars;
    const char* says;
  } cases[] = {
      {without("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"},
      {without("AWS_SECRET_ACCESS_KEY"), "AWS_SECRET_ACCESS_KEY is not"},
      {without("AWS_ACCESS_KEY_ID"), "AWS_ACCESS_KEY_ID is not"},
  };
  for (const Case& c : cases) {
    FakeEnv env(c.vars);
    Result<ObjectStoreConfig> r = LoadObjectStoreConfig({}, env.lookup());
    ASSERT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().ToString();
    EXPECT_EQ(r.status().message().find("secret/with+chars=="), std::string::npos);
    EXPECT_EQ(r.status().message().find("AKIAEXAMPLEKEYID0000"), std::string::npos);
  }
  for (const char* bad : {"127.0.0.1:7480", "ftp://h", "http://", "http://h/path", "http://user:pw@h", "http://h?q"}) {
    FakeEnv env(std::map<std::string, std::string>{{"AWS_ENDPOINT_URL", bad}});
    EXPECT_EQ(LoadObjectStoreConfig({}, env.lookup()).status().code(), ErrorCode::kInvalidArgument) << bad;
  }
  FakeEnv bad_region(std::map<std::string, std::string>{{"AWS_ENDPOINT_URL", "http://h"}, {"AWS_REGION", "us:east"}});
  EXPECT_FALSE(LoadObjectStoreConfig({}, bad_region.lookup()).ok());
  ObjectStoreConfigOverrides newline{.credentials = ObjectStoreCredentials{"K", "s\r\nX-Evil: 1", ""}};
  FakeEnv env(kFull);
  Result<ObjectStoreConfig> r = LoadObjectStoreConfig(newline, env.lookup());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find("X-Evil"), std::string::npos);
}

TEST(ObjectStoreConfigTest, RedactHidesEveryCredential) {
  FakeEnv env(kFull);
  ObjectStoreConfig c = *LoadObjectStoreConfig({}, env.lookup());
  std::string text = c.Redact("key AKIAEXAMPLEKEYID0000 secret secret/with+chars== token session-token-value end");
  EXPECT_EQ(text, "key [redacted] secret [redacted] token [redacted] end");
  EXPECT_EQ(c.Describe().find("AKIA"), std::string::npos);
}

TEST(ObjectStoreConfigTest, BackoffDoublesWithinJitterAndCap) {
  RetryPolicy p{.max_attempts = 6,
                .initial_backoff = std::chrono::milliseconds(100),
                .max_backoff = std::chrono::milliseconds(350)};
  EXPECT_EQ(p.BackoffAfter(1, 0.0).count(), 50);
  EXPECT_EQ(p.BackoffAfter(1, 0.999).count(), 99);
  EXPECT_EQ(p.BackoffAfter(2, 0.0).count(), 100);
  EXPECT_EQ(p.BackoffAfter(3, 0.0).count(), 175);  // capped at 350
  EXPECT_EQ(p.BackoffAfter(5, 1.0).count(), 350);
  for (int i = 0; i < 100; ++i) {
    auto b = p.JitteredBackoffAfter(2);
    EXPECT_GE(b.count(), 100);
    EXPECT_LE(b.count(), 200);
  }
}

TEST(ObjectStoreConfigTest, StoreErrorBodiesGiveCodeAndMessage) {
  StoreErrorText t = ParseStoreError(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key\n does not exist</Message></Error>");
  EXPECT_EQ(t.code, "NoSuchKey");
  EXPECT_EQ(t.message, "The key? does not exist");
  EXPECT_EQ(ParseStoreError("not xml").code, "");
  EXPECT_EQ(ParseStoreError("<Code>" + std::string(1000, 'A') + "</Code>").code.size(), 200u);
}

}  // namespace
}  // namespace uffdpager
