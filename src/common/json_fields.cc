#include "common/json_fields.h"

#include <fmt/format.h>

namespace uffdpager {

namespace json_fields_detail {

namespace {

Status WrongType(const nlohmann::json& value, const Label& label, std::string_view expected,
                 std::string_view serde_expected) {
  if (label.wording == JsonWording::kSerde) {
    return Status::InvalidArgument(fmt::format("invalid type: {}, expected {}", value.type_name(), serde_expected));
  }
  return Status::InvalidArgument(fmt::format("\"{}\" must be {}", label.name, expected));
}

std::string IntegerRange(int64_t min, uint64_t max) { return fmt::format("an integer from {} to {}", min, max); }

// An integer outside [min, max]; `given` is its decimal text.
Status OutOfRange(const Label& label, std::string_view given, int64_t min, uint64_t max, std::string_view type_name) {
  if (label.wording == JsonWording::kSerde) {
    return Status::InvalidArgument(fmt::format("invalid value: integer `{}`, expected {}", given,
                                               type_name.empty() ? IntegerRange(min, max) : std::string(type_name)));
  }
  if (min == 0 && given.starts_with('-')) {
    return Status::InvalidArgument(fmt::format("\"{}\" must be non-negative: {}", label.name, IntegerRange(0, max)));
  }
  return Status::InvalidArgument(fmt::format("\"{}\" must be {}", label.name, IntegerRange(min, max)));
}

Status NotAnInteger(const nlohmann::json& value, const Label& label, int64_t min, uint64_t max,
                    std::string_view type_name) {
  std::string expected = IntegerRange(min, max);
  return WrongType(value, label, expected, type_name.empty() ? std::string_view(expected) : type_name);
}

}  // namespace

Label Label::Element(size_t index) const { return Label{fmt::format("{}[{}]", name, index), field, wording}; }

Status Convert(const nlohmann::json& value, const Label& label, std::string* out) {
  if (!value.is_string()) return WrongType(value, label, "a string", "a string");
  *out = value.get_ref<const std::string&>();
  return Status::Ok();
}

Status Convert(const nlohmann::json& value, const Label& label, bool* out) {
  if (!value.is_boolean()) return WrongType(value, label, "a boolean", "a boolean");
  *out = value.get<bool>();
  return Status::Ok();
}

Status Convert(const nlohmann::json& value, const Label& label, nlohmann::json* out) {
  // Read requires a field to hold something; null counts as nothing.
  if (value.is_null()) return WrongType(value, label, "a value, not null", "any value");
  *out = value;
  return Status::Ok();
}

Status NotAnArray(const nlohmann::json& value, const Label& label) {
  return WrongType(value, label, "an array", "a sequence");
}

// nlohmann keeps a non-negative integer parsed from text as number_unsigned,
// a negative one as number_integer; one built in process from a signed C++
// integer is number_integer whatever its sign. Both are read exactly.
Status ConvertUnsigned(const nlohmann::json& value, const Label& label, uint64_t max, std::string_view type_name,
                       uint64_t* out) {
  if (!value.is_number_integer()) return NotAnInteger(value, label, 0, max, type_name);
  if (!value.is_number_unsigned()) {
    int64_t v = value.get<int64_t>();
    if (v < 0 || static_cast<uint64_t>(v) > max) return OutOfRange(label, std::to_string(v), 0, max, type_name);
    *out = static_cast<uint64_t>(v);
    return Status::Ok();
  }
  uint64_t v = value.get<uint64_t>();
  if (v > max) return OutOfRange(label, std::to_string(v), 0, max, type_name);
  *out = v;
  return Status::Ok();
}

Status ConvertSigned(const nlohmann::json& value, const Label& label, int64_t min, int64_t max,
                     std::string_view type_name, int64_t* out) {
  const uint64_t umax = static_cast<uint64_t>(max);  // max >= 0 for every range read here
  if (!value.is_number_integer()) return NotAnInteger(value, label, min, umax, type_name);
  if (value.is_number_unsigned()) {
    uint64_t v = value.get<uint64_t>();
    if (v > umax) return OutOfRange(label, std::to_string(v), min, umax, type_name);
    *out = static_cast<int64_t>(v);
    return Status::Ok();
  }
  int64_t v = value.get<int64_t>();
  if (v < min || v > max) return OutOfRange(label, std::to_string(v), min, umax, type_name);
  *out = v;
  return Status::Ok();
}

}  // namespace json_fields_detail

using json_fields_detail::Label;

Label JsonFields::LabelOf(std::string_view name) const {
  std::string full = path_.empty() ? std::string(name) : fmt::format("{}.{}", path_, name);
  return Label{std::move(full), std::string(name), wording_};
}

bool JsonFields::Has(std::string_view name) const {
  if (!object_.is_object()) return false;
  auto it = object_.find(std::string(name));
  return it != object_.end() && !it->is_null();
}

Status JsonFields::Find(std::string_view name, bool optional, const nlohmann::json** value) const {
  *value = nullptr;
  if (!object_.is_object()) {
    if (wording_ == JsonWording::kSerde) {
      return Status::InvalidArgument(fmt::format("invalid type: {}, expected a map", object_.type_name()));
    }
    return Status::InvalidArgument(path_.empty() ? std::string("expected a JSON object")
                                                 : fmt::format("\"{}\" must be an object", path_));
  }
  auto it = object_.find(std::string(name));
  if (it == object_.end()) {
    if (optional) return Status::Ok();
    if (wording_ == JsonWording::kSerde) return Status::InvalidArgument(fmt::format("missing field `{}`", name));
    return Status::InvalidArgument(fmt::format("missing field \"{}\"", LabelOf(name).name));
  }
  if (optional && it->is_null()) return Status::Ok();
  *value = &*it;
  return Status::Ok();
}

}  // namespace uffdpager
