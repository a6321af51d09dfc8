// JsonFields: the one reader of JSON fields. Every error names the field and
// what it must be; absent and null optional fields are no error; nothing
// throws, whatever the JSON holds.
#include "common/json_fields.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace uffdpager {
namespace {

using nlohmann::json;

// The status' message, which must be an InvalidArgument error.
std::string ErrorOf(const Status& st) {
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument) << st.ToString();
  return st.message();
}

void ExpectError(const Status& st, const std::string& expected) {
  std::string message = ErrorOf(st);
  EXPECT_NE(message.find(expected), std::string::npos) << "\"" << message << "\" lacks \"" << expected << "\"";
}

TEST(JsonFieldsTest, ReadsEverySupportedType) {
  json j = json::parse(R"({"s": "text", "b": true, "u": 18446744073709551615, "i": -5, "n": {"x": 1},
                          "list": ["a", "b"], "pairs": [[1, 2], [3, 4]]})");
  JsonFields f(j);
  std::string s;
  bool b = false;
  uint64_t u = 0;
  int32_t i = 0;
  json n;
  std::vector<std::string> list;
  std::vector<std::vector<uint64_t>> pairs;
  ASSERT_TRUE(f.Read("s", &s).ok());
  ASSERT_TRUE(f.Read("b", &b).ok());
  ASSERT_TRUE(f.Read("u", &u).ok());
  ASSERT_TRUE(f.Read("i", &i).ok());
  ASSERT_TRUE(f.Read("n", &n).ok());
  ASSERT_TRUE(f.Read("list", &list).ok());
  ASSERT_TRUE(f.Read("pairs", &pairs).ok());
  EXPECT_EQ(s, "text");
  EXPECT_TRUE(b);
  EXPECT_EQ(u, UINT64_MAX);
  EXPECT_EQ(i, -5);
  EXPECT_EQ(n, json({{"x", 1}}));
  EXPECT_EQ(list, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(pairs, (std::vector<std::vector<uint64_t>>{{1, 2}, {3, 4}}));
}

TEST(JsonFieldsTest, IntegersBuiltInProcessReadLikeParsedOnes) {
  // A json built from a signed C++ int holds a signed number even when positive.
  json j = {{"count", int{7}}, {"big", uint64_t{1} << 63}};
  uint8_t count = 0;
  uint64_t big = 0;
  ASSERT_TRUE(JsonFields(j).Read("count", &count).ok());
  ASSERT_TRUE(JsonFields(j).Read("big", &big).ok());
  EXPECT_EQ(count, 7);
  EXPECT_EQ(big, uint64_t{1} << 63);
}

TEST(JsonFieldsTest, AMissingRequiredFieldIsNamed) {
  json j = json::object();
  std::string s = "kept";
  ExpectError(JsonFields(j).Read("instance_id", &s), "missing field \"instance_id\"");
  EXPECT_EQ(s, "kept");
  // A nested object's path is part of the name.
  ExpectError(JsonFields(j, "machine").Read("vcpu_count", &s), "missing field \"machine.vcpu_count\"");
}

TEST(JsonFieldsTest, NullIsAbsentForOptionalFieldsAndWrongForRequiredOnes) {
  json j = {{"s", nullptr}, {"u", nullptr}, {"n", nullptr}};
  JsonFields f(j);
  std::string s = "default";
  uint32_t u = 9;
  std::optional<uint32_t> maybe;
  json n = "untouched";
  EXPECT_TRUE(f.ReadOptional("s", &s).ok());
  EXPECT_TRUE(f.ReadOptional("u", &u).ok());
  EXPECT_TRUE(f.ReadOptional("u", &maybe).ok());
  EXPECT_TRUE(f.ReadOptional("u", &maybe, /*max=*/5).ok());
  EXPECT_TRUE(f.ReadOptional("n", &n).ok());
  EXPECT_TRUE(f.ReadOptional("absent", &s).ok());
  EXPECT_TRUE(f.ReadOptional("absent", &maybe).ok());
  EXPECT_EQ(s, "default");
  EXPECT_EQ(u, 9u);
  EXPECT_FALSE(maybe.has_value());
  EXPECT_EQ(n, "untouched");
  EXPECT_FALSE(f.Has("s"));
  EXPECT_FALSE(f.Has("absent"));

  ExpectError(f.Read("s", &s), "\"s\" must be a string");
  ExpectError(f.Read("u", &u), "\"u\" must be an integer from 0 to 4294967295");
  ExpectError(f.Read("n", &n), "\"n\" must be a value, not null");
}

TEST(JsonFieldsTest, OptionalFieldsThatArePresentAreChecked) {
  json j = {{"s", 5}, {"id", 4294967295u}, {"ok", 3}};
  JsonFields f(j);
  std::string s = "kept";
  std::optional<uint32_t> id;
  bool ok = true;
  ExpectError(f.ReadOptional("s", &s), "\"s\" must be a string");
  ExpectError(f.ReadOptional("id", &id, /*max=*/0xfffffffe), "\"id\" must be an integer from 0 to 4294967294");
  ExpectError(f.ReadOptional("ok", &ok), "\"ok\" must be a boolean");
  EXPECT_EQ(s, "kept");
  EXPECT_FALSE(id.has_value());
  EXPECT_TRUE(ok);

  std::optional<std::string> name;
  json named = {{"name", "x"}};
  ASSERT_TRUE(JsonFields(named).ReadOptional("name", &name).ok());
  EXPECT_EQ(name, "x");
}

TEST(JsonFieldsTest, WrongTypesAreErrorsForEveryType) {
  json j = json::parse(R"({"num": 1, "str": "1", "bool": true, "obj": {}, "arr": [1], "strs": ["a", 2]})");
  JsonFields f(j);
  std::string s;
  bool b = false;
  uint16_t u = 0;
  std::vector<std::string> v;
  ExpectError(f.Read("num", &s), "\"num\" must be a string");
  ExpectError(f.Read("obj", &s), "\"obj\" must be a string");
  ExpectError(f.Read("str", &b), "\"str\" must be a boolean");
  ExpectError(f.Read("num", &b), "\"num\" must be a boolean");
  ExpectError(f.Read("str", &u), "\"str\" must be an integer from 0 to 65535");
  ExpectError(f.Read("bool", &u), "\"bool\" must be an integer from 0 to 65535");
  ExpectError(f.Read("arr", &u), "\"arr\" must be an integer from 0 to 65535");
  ExpectError(f.Read("str", &v), "\"str\" must be an array");
  ExpectError(f.Read("strs", &v), "\"strs[1]\" must be a string");
}

TEST(JsonFieldsTest, IntegersMustBeWholeAndInRange) {
  json j = json::parse(R"({"neg": -1, "float": 1.0, "half": 0.5, "big": 4294967296, "huge": 1e30,
                          "low": -2147483649, "pid": 2147483648})");
  JsonFields f(j);
  uint32_t u = 7;
  int32_t i = 7;
  ExpectError(f.Read("neg", &u), "\"neg\" must be non-negative: an integer from 0 to 4294967295");
  ExpectError(f.Read("float", &u), "\"float\" must be an integer from 0 to 4294967295");
  ExpectError(f.Read("half", &i), "\"half\" must be an integer from -2147483648 to 2147483647");
  ExpectError(f.Read("big", &u), "\"big\" must be an integer from 0 to 4294967295");
  ExpectError(f.Read("huge", &u), "\"huge\" must be an integer from 0 to 4294967295");
  ExpectError(f.Read("low", &i), "\"low\" must be an integer from -2147483648 to 2147483647");
  ExpectError(f.Read("pid", &i), "\"pid\" must be an integer from -2147483648 to 2147483647");
  EXPECT_EQ(u, 7u);
  EXPECT_EQ(i, 7);

  // With a max the range is [0, max], for signed types too.
  ExpectError(f.Read("neg", &i, /*max=*/0x7fffffff), "\"neg\" must be non-negative: an integer from 0 to 2147483647");
  ExpectError(f.Read("big", &u, /*max=*/100), "\"big\" must be an integer from 0 to 100");
  json ok = {{"pid", 2147483647}};
  ASSERT_TRUE(JsonFields(ok).Read("pid", &i, /*max=*/0x7fffffff).ok());
  EXPECT_EQ(i, 2147483647);
  // A max wider than the type is the type's.
  ExpectError(f.Read("big", &u, /*max=*/UINT64_MAX), "\"big\" must be an integer from 0 to 4294967295");
}

TEST(JsonFieldsTest, NestedObjectsAreReadWithTheirPath) {
  json j = json::parse(R"({"machine": {"vcpu_count": 2, "smt": "no"}, "regions": [{"size": 1}, {"size": -1}],
                          "flat": 3})");
  JsonFields f(j);
  json machine;
  ASSERT_TRUE(f.Read("machine", &machine).ok());
  JsonFields m(machine, "machine");
  uint32_t vcpus = 0;
  bool smt = false;
  ASSERT_TRUE(m.Read("vcpu_count", &vcpus).ok());
  EXPECT_EQ(vcpus, 2u);
  ExpectError(m.Read("smt", &smt), "\"machine.smt\" must be a boolean");

  std::vector<json> regions;
  ASSERT_TRUE(f.Read("regions", &regions).ok());
  ASSERT_EQ(regions.size(), 2u);
  uint64_t size = 0;
  ASSERT_TRUE(JsonFields(regions[0], "regions[0]").Read("size", &size).ok());
  ExpectError(JsonFields(regions[1], "regions[1]").Read("size", &size), "\"regions[1].size\" must be non-negative");

  json flat;
  ASSERT_TRUE(f.Read("flat", &flat).ok());
  ExpectError(JsonFields(flat, "flat").Read("x", &size), "\"flat\" must be an object");
  ExpectError(JsonFields(flat).ReadOptional("x", &size), "expected a JSON object");
}

TEST(JsonFieldsTest, SerdeWordingForFirecrackersApi) {
  json j = json::parse(R"({"vcpu_count": "two", "big": 300, "neg": -1, "mem": 5, "flag": 1})");
  JsonFields f(j, "", JsonWording::kSerde);
  uint8_t vcpus = 0;
  uint64_t mem = 0;
  bool flag = false;
  std::string s;
  ExpectError(f.Read("absent", &s), "missing field `absent`");
  ExpectError(f.Read("vcpu_count", &vcpus), "invalid type: string, expected u8");
  ExpectError(f.Read("big", &vcpus), "invalid value: integer `300`, expected u8");
  ExpectError(f.Read("neg", &vcpus), "invalid value: integer `-1`, expected u8");
  ExpectError(f.Read("mem", &mem, /*max=*/4), "invalid value: integer `5`, expected an integer from 0 to 4");
  ExpectError(f.Read("flag", &flag), "invalid type: number, expected a boolean");
  ExpectError(f.Read("mem", &s), "invalid type: number, expected a string");
}

TEST(JsonFieldsTest, NothingThrowsWhateverTheJsonHolds) {
  const std::vector<json> values = {nullptr,
                                    true,
                                    -1,
                                    0,
                                    18446744073709551615u,
                                    1.5,
                                    -1e300,
                                    "text",
                                    json::array(),
                                    json::array({1, "x"}),
                                    json::object(),
                                    json{{"a", 1}}};
  for (const json& value : values) {
    // Each value as a field, and as the object itself.
    for (const json& object : {json{{"f", value}}, value}) {
      JsonFields f(object, "o");
      EXPECT_NO_THROW({
        std::string s;
        bool b;
        int8_t i8;
        uint8_t u8;
        int64_t i64;
        uint64_t u64;
        json any;
        std::vector<std::string> strings;
        std::vector<uint64_t> numbers;
        std::vector<json> anys;
        std::optional<int32_t> maybe;
        (void)f.Has("f");
        (void)f.Read("f", &s);
        (void)f.Read("f", &b);
        (void)f.Read("f", &i8);
        (void)f.Read("f", &u8);
        (void)f.Read("f", &i64);
        (void)f.Read("f", &u64);
        (void)f.Read("f", &u64, 10);
        (void)f.Read("f", &any);
        (void)f.Read("f", &strings);
        (void)f.Read("f", &numbers);
        (void)f.Read("f", &anys);
        (void)f.ReadOptional("f", &s);
        (void)f.ReadOptional("f", &maybe);
        (void)f.ReadOptional("f", &maybe, 10);
        (void)JsonFields(object, "", JsonWording::kSerde).Read("f", &u8);
      }) << value.dump();
    }
  }
}

}  // namespace
}  // namespace uffdpager
