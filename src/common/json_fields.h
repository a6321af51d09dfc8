// JsonFields: reads the fields of one JSON object into C++ values. The one
// way uffdpager reads JSON it did not just build itself: request bodies,
// records and state files read back, answers of other processes.
//
// The contract:
//  * Nothing here throws. A value's JSON type is checked before it is
//    converted (nlohmann's get<T> throws on a mismatch, and a throw out of a
//    request handler or a recovery would take the process down).
//  * Every error is Status::InvalidArgument and names the field and what it
//    must be:
//      missing field "instance_id"
//      "instance_id" must be a string
//      "expected_pid" must be an integer from 0 to 2147483647
//      "offset" must be non-negative: an integer from 0 to 18446744073709551615
//    Callers say where the object came from with Status::WithContext.
//    (JsonWording::kSerde words them as serde does, which names the field
//    only when it is missing.)
//  * Read: the field must be present and hold the type; null is the wrong
//    type. ReadOptional: an absent or null field is no error and leaves *out
//    untouched, so whatever *out held is the default.
//  * On any error *out is untouched.
//  * If the JSON value is not an object at all, every read is an error.
//
// Types a field can be read into:
//  * std::string, bool;
//  * integer types: only JSON integers (not floats, strings or booleans),
//    within the C++ type's range, or within [0, max] where a max is given;
//  * nlohmann::json: any value, for a nested object or array that the caller
//    reads further (with a JsonFields of its own, whose `path` names it);
//  * std::vector<T> of any of these: a JSON array, each element checked.
//  * std::optional<T> through ReadOptional: set only when the field is there.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"

namespace uffdpager {

// How errors are worded.
enum class JsonWording {
  kPlain,  // uffdpager's own: `"size" must be a string`, `missing field "size"`
  // serde_json's, which Firecracker's API answers with and tinyvmm imitates:
  // "invalid type: string, expected u8", "missing field `vcpu_count`".
  kSerde,
};

template <typename T>
concept JsonInteger = std::is_integral_v<T> && !std::is_same_v<T, bool>;

namespace json_fields_detail {

// What errors call a value: a field ("size", "machine.size") or an element
// of an array field ("regions[2]").
struct Label {
  std::string name;   // as plain errors quote it
  std::string field;  // the bare field name, for serde's "missing field `x`"
  JsonWording wording = JsonWording::kPlain;

  Label Element(size_t index) const;
};

Status Convert(const nlohmann::json& value, const Label& label, std::string* out);
Status Convert(const nlohmann::json& value, const Label& label, bool* out);
Status Convert(const nlohmann::json& value, const Label& label, nlohmann::json* out);
// Integers in [min, max]. `type_name` names a whole C++ type's range the way
// serde names Rust's ("u8"); empty for a narrower range.
Status ConvertUnsigned(const nlohmann::json& value, const Label& label, uint64_t max, std::string_view type_name,
                       uint64_t* out);
Status ConvertSigned(const nlohmann::json& value, const Label& label, int64_t min, int64_t max,
                     std::string_view type_name, int64_t* out);
Status NotAnArray(const nlohmann::json& value, const Label& label);

template <JsonInteger T>
constexpr std::string_view RustTypeName() {
  constexpr size_t bits = sizeof(T) * 8;
  if constexpr (std::is_signed_v<T>) {
    return bits == 8 ? "i8" : bits == 16 ? "i16" : bits == 32 ? "i32" : "i64";
  } else {
    return bits == 8 ? "u8" : bits == 16 ? "u16" : bits == 32 ? "u32" : "u64";
  }
}

// An integer in [0, max] (max clamped to T's own) or, without a max, in T's range.
template <JsonInteger T>
Status ConvertInteger(const nlohmann::json& value, const Label& label, std::optional<uint64_t> max, T* out) {
  constexpr uint64_t kTypeMax = static_cast<uint64_t>(std::numeric_limits<T>::max());
  const std::string_view type_name = max ? std::string_view() : RustTypeName<T>();
  const uint64_t limit = max ? std::min(*max, kTypeMax) : kTypeMax;
  if constexpr (std::is_signed_v<T>) {
    int64_t v = 0;
    const int64_t min = max ? 0 : static_cast<int64_t>(std::numeric_limits<T>::min());
    UFFD_RETURN_IF_ERROR(ConvertSigned(value, label, min, static_cast<int64_t>(limit), type_name, &v));
    *out = static_cast<T>(v);
  } else {
    uint64_t v = 0;
    UFFD_RETURN_IF_ERROR(ConvertUnsigned(value, label, limit, type_name, &v));
    *out = static_cast<T>(v);
  }
  return Status::Ok();
}

template <JsonInteger T>
Status Convert(const nlohmann::json& value, const Label& label, T* out) {
  return ConvertInteger(value, label, std::nullopt, out);
}

template <typename T>
Status Convert(const nlohmann::json& value, const Label& label, std::vector<T>* out) {
  if (!value.is_array()) return NotAnArray(value, label);
  std::vector<T> elements;
  elements.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    T element{};
    UFFD_RETURN_IF_ERROR(Convert(value[i], label.Element(i), &element));
    elements.push_back(std::move(element));
  }
  *out = std::move(elements);
  return Status::Ok();
}

}  // namespace json_fields_detail

class JsonFields {
 public:
  // `object` must outlive this reader. A non-empty `path` names the object
  // in errors ("machine" makes its field "size" read "machine.size").
  explicit JsonFields(const nlohmann::json& object, std::string path = "", JsonWording wording = JsonWording::kPlain)
      : object_(object), path_(std::move(path)), wording_(wording) {}
  // A reader kept past the end of a temporary's statement would dangle.
  JsonFields(nlohmann::json&& object, std::string path = "", JsonWording wording = JsonWording::kPlain) = delete;

  // The field is present and not null.
  bool Has(std::string_view name) const;

  template <typename T>
  Status Read(std::string_view name, T* out) const {
    return ReadInto(name, /*optional=*/false, std::nullopt, out);
  }
  template <typename T>
  Status ReadOptional(std::string_view name, T* out) const {
    return ReadInto(name, /*optional=*/true, std::nullopt, out);
  }
  template <typename T>
  Status ReadOptional(std::string_view name, std::optional<T>* out) const {
    return ReadIntoOptional(name, std::nullopt, out);
  }

  // Integers from 0 to `max` (a uid, a pid, a count with a limit).
  template <JsonInteger T>
  Status Read(std::string_view name, T* out, uint64_t max) const {
    return ReadInto(name, /*optional=*/false, max, out);
  }
  template <JsonInteger T>
  Status ReadOptional(std::string_view name, T* out, uint64_t max) const {
    return ReadInto(name, /*optional=*/true, max, out);
  }
  template <JsonInteger T>
  Status ReadOptional(std::string_view name, std::optional<T>* out, uint64_t max) const {
    return ReadIntoOptional(name, max, out);
  }

 private:
  // The value of field `name`, or nullptr where an optional field is absent
  // or null; an error where a required one is absent or this is no object.
  Status Find(std::string_view name, bool optional, const nlohmann::json** value) const;
  json_fields_detail::Label LabelOf(std::string_view name) const;

  // `max` only ever comes with integers (see the public overloads).
  template <typename T>
  Status ReadInto(std::string_view name, bool optional, std::optional<uint64_t> max, T* out,
                  bool* present = nullptr) const {
    const nlohmann::json* value = nullptr;
    UFFD_RETURN_IF_ERROR(Find(name, optional, &value));
    if (value == nullptr) return Status::Ok();
    if constexpr (JsonInteger<T>) {
      UFFD_RETURN_IF_ERROR(json_fields_detail::ConvertInteger(*value, LabelOf(name), max, out));
    } else {
      UFFD_RETURN_IF_ERROR(json_fields_detail::Convert(*value, LabelOf(name), out));
    }
    if (present != nullptr) *present = true;
    return Status::Ok();
  }
  template <typename T>
  Status ReadIntoOptional(std::string_view name, std::optional<uint64_t> max, std::optional<T>* out) const {
    T value{};
    bool present = false;
    UFFD_RETURN_IF_ERROR(ReadInto(name, /*optional=*/true, max, &value, &present));
    if (present) *out = std::move(value);
    return Status::Ok();
  }

  const nlohmann::json& object_;
  std::string path_;
  JsonWording wording_;
};

}  // namespace uffdpager
