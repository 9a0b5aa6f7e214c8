// Strict reading of JSON config sections: every key is either read or an error that names the full path
// and the closest valid key; wrong types and ranges name the path and what was expected.
#pragma once

#include <nlohmann/json.hpp>

#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "coat/core/error.h"

namespace coat {

/// A configuration error: the message names the file or key and what was expected.
class ConfigError : public Error {
  using Error::Error;
};

/// Edit distance, used to suggest the closest valid key.
size_t edit_distance(std::string_view a, std::string_view b);
/// The candidate closest to `key`, or "" when nothing is reasonably close.
std::string closest_match(std::string_view key, const std::vector<std::string>& candidates);

class ConfigSection {
 public:
  /// `path` is the dotted location of this section ("optim", "model"), used in messages.
  ConfigSection(const nlohmann::json& node, std::string path);

  /// The value at key, or `fallback` when absent. Throws ConfigError on a wrong type.
  template <typename T>
  T get(const std::string& key, const T& fallback) {
    known_.insert(key);
    if (!node_.contains(key)) return fallback;
    return convert<T>(key);
  }
  /// The value at key. When it is missing and every key of the section has been read, throws ConfigError
  /// at once. When keys not read yet remain, one of them may be the required key misspelled: the error
  /// waits for finish(), which reports an unknown key (with the closest valid one) before a missing one;
  /// until then the value is T{} (check_range passes it) and must only be stored.
  template <typename T>
  T require(const std::string& key) {
    known_.insert(key);
    if (!node_.contains(key)) {
      if (!has_unread_keys()) throw missing_key_error(key);
      missing_.push_back(key);
      return T{};
    }
    return convert<T>(key);
  }
  /// One of `choices` (strings), else an error listing them: no silent fallback.
  std::string choice(const std::string& key, const std::string& fallback, const std::vector<std::string>& choices);
  /// One of `values` of an enum, spelled in the config as `name_of(value)`; the error lists the spellings.
  template <typename Enum, typename NameOf>
    requires std::is_enum_v<Enum>
  Enum choice(const std::string& key, Enum fallback, std::initializer_list<Enum> values, NameOf name_of) {
    std::vector<std::string> names;
    for (Enum v : values) names.emplace_back(name_of(v));
    const std::string chosen = choice(key, std::string(name_of(fallback)), names);
    for (Enum v : values) {
      if (name_of(v) == chosen) return v;
    }
    return fallback;  // not reached: choice() accepted one of the names
  }
  /// As above, spelled as the enum's to_string (found next to the enum).
  template <typename Enum>
    requires std::is_enum_v<Enum>
  Enum choice(const std::string& key, Enum fallback, std::initializer_list<Enum> values) {
    return choice(key, fallback, values, [](Enum v) { return std::string(to_string(v)); });
  }
  /// A sub-section (an empty one when absent).
  ConfigSection section(const std::string& key);
  bool has(const std::string& key) const { return node_.contains(key); }

  /// Throws ConfigError for the first key that was never read, naming the closest valid key (and the
  /// required keys still missing, which such a key may be meant to be); then for the first required key
  /// that was missing.
  void finish() const;
  /// Range check with a message naming the key. A required key that is missing is not checked: finish()
  /// reports it.
  template <typename T>
  void check_range(const std::string& key, T value, T low, T high) const {
    if (is_missing(key)) return;
    if (value < low || value > high) {
      throw ConfigError(detail::concat("config: '", where(key), "' = ", value, " is out of range; expected ", low,
                                       " <= value <= ", high));
    }
  }
  std::string where(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

 private:
  template <typename T>
  T convert(const std::string& key) {
    const nlohmann::json& v = node_.at(key);
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) type_error(key, "a boolean (true/false)", v);
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) type_error(key, "an integer", v);
      if constexpr (std::is_unsigned_v<T>) {
        if (v.is_number_integer() && v.get<int64_t>() < 0 && !v.is_number_unsigned()) {
          type_error(key, "a non-negative integer", v);
        }
      }
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) type_error(key, "a number", v);
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) type_error(key, "a string", v);
    }
    return v.get<T>();
  }
  [[noreturn]] void type_error(const std::string& key, std::string_view expected, const nlohmann::json& v) const;
  ConfigError missing_key_error(const std::string& key) const;
  /// Whether a key of this section has not been read (so far: it may still be read, or be unknown).
  bool has_unread_keys() const;
  bool is_missing(const std::string& key) const;

  const nlohmann::json& node_;
  std::string path_;
  std::set<std::string> known_;
  std::vector<std::string> missing_;  ///< required keys that were missing, reported by finish()
};

/// Applies "section.key=value" to a JSON document. The value is parsed as JSON when it is valid JSON
/// (numbers, true/false, quoted strings, arrays), else taken as a string. Intermediate objects are created.
void apply_override(nlohmann::json& document, std::string_view assignment);

}  // namespace coat
