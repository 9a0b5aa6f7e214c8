// Strict config reading: unknown keys with suggestions, typed errors with paths, dotted overrides.
#include "coat/core/config_reader.h"

#include <algorithm>

namespace coat {

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string closest_match(std::string_view key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(3, key.size() / 2) + 1;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(key, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

ConfigSection::ConfigSection(const nlohmann::json& node, std::string path) : node_(node), path_(std::move(path)) {
  if (!node_.is_object() && !node_.is_null()) {
    throw ConfigError(detail::concat("config: '", path_, "' must be an object (a section), got ", node_.dump()));
  }
}

std::string ConfigSection::choice(const std::string& key, const std::string& fallback,
                                  const std::vector<std::string>& choices) {
  const std::string value = get<std::string>(key, fallback);
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return value;
  std::string list;
  for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
  const std::string near = closest_match(value, choices);
  throw ConfigError(detail::concat("config: '", where(key), "' = \"", value, "\" is not valid; expected one of: ",
                                   list, near.empty() ? "" : " (did you mean \"" + near + "\"?)"));
}

ConfigSection ConfigSection::section(const std::string& key) {
  known_.insert(key);
  static const nlohmann::json kEmpty = nlohmann::json::object();
  return ConfigSection(node_.contains(key) ? node_.at(key) : kEmpty, where(key));
}

bool ConfigSection::has_unread_keys() const {
  if (!node_.is_object()) return false;
  for (const auto& item : node_.items()) {
    if (!known_.count(item.key())) return true;
  }
  return false;
}

bool ConfigSection::is_missing(const std::string& key) const {
  return std::find(missing_.begin(), missing_.end(), key) != missing_.end();
}

ConfigError ConfigSection::missing_key_error(const std::string& key) const {
  return ConfigError(detail::concat("config: missing required key '", where(key), "'"));
}

void ConfigSection::finish() const {
  if (!node_.is_object()) return;
  const std::vector<std::string> valid(known_.begin(), known_.end());
  // Unknown keys first: a misspelled required key is reported as what it is, not only as the key it misses.
  for (const auto& item : node_.items()) {
    if (known_.count(item.key())) continue;
    const std::string near = closest_match(item.key(), valid);
    std::string valid_list;
    for (const std::string& k : valid) valid_list += (valid_list.empty() ? "" : ", ") + k;
    std::string missing_list;
    for (const std::string& k : missing_) {
      if (!missing_list.empty()) missing_list += ", ";
      missing_list += detail::concat("'", where(k), "'");
    }
    throw ConfigError(detail::concat("config: unknown key '", where(item.key()), "'",
                                     near.empty() ? "" : "; did you mean '" + where(near) + "'?",
                                     " (valid keys here: ", valid_list, ")",
                                     missing_list.empty() ? "" : "; missing required key " + missing_list));
  }
  if (!missing_.empty()) throw missing_key_error(missing_.front());
}

void ConfigSection::type_error(const std::string& key, std::string_view expected, const nlohmann::json& v) const {
  throw ConfigError(detail::concat("config: '", where(key), "' must be ", expected, ", got ", v.dump()));
}

namespace {

bool is_valid_utf8(std::string_view text) {
  try {
    (void)nlohmann::json(std::string(text)).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace

void apply_override(nlohmann::json& document, std::string_view assignment) {
  // A config is a JSON document, which is UTF-8: nothing else may enter it (it is written out again).
  if (!is_valid_utf8(assignment)) throw ConfigError("--set: the assignment is not valid UTF-8 text");
  const size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    throw ConfigError(detail::concat("--set '", assignment, "': expected section.key=value"));
  }
  const std::string path(assignment.substr(0, eq));
  const std::string text(assignment.substr(eq + 1));
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  nlohmann::json* node = &document;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw ConfigError(detail::concat("--set '", assignment, "': empty key in '", path, "'"));
    if (!node->is_object()) {
      throw ConfigError(detail::concat("--set '", assignment, "': '", path.substr(0, start - 1),
                                       "' is not a section"));
    }
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    if (!node->contains(part)) (*node)[part] = nlohmann::json::object();
    node = &(*node)[part];
    start = dot + 1;
  }
}

}  // namespace coat
