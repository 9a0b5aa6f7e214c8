// The layout of a format-2 checkpoint: JSON form, validation, and the comparison that refuses another model.
#include "coat/io/checkpoint_layout.h"

#include <set>

#include "coat/core/error.h"
#include "coat/io/checkpoint.h"

namespace coat::io {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw IoError(detail::concat("checkpoint layout (", where, "): ", what));
}

std::string shape_json(const Shape& s) {
  return nlohmann::json(s).dump();
}

void validate_units(const CheckpointLayout& l, const std::string& where) {
  std::set<std::string> names;
  for (const CheckpointUnit& u : l.units) {
    if (u.name.empty() || !names.insert(u.name).second)
      fail(where, detail::concat("unit name '", u.name, "' is empty or repeated"));
    if (u.numel < 0) fail(where, detail::concat("unit '", u.name, "' has ", u.numel, " elements"));
    for (const CheckpointParam& p : u.params) {
      const int64_t n = shape_numel(p.shape);
      if (p.offset < 0 || n < 0 || p.offset > u.numel - n) {
        fail(where, detail::concat("parameter '", p.name, "' ", shape_json(p.shape), " at offset ", p.offset,
                                   " lies outside unit '", u.name, "' of ", u.numel, " elements"));
      }
    }
  }
}

void validate_kinds(const CheckpointLayout& l, const std::string& where) {
  std::set<std::string> suffixes;
  for (const UnitTensorKind& k : l.kinds) {
    if (k.suffix.empty() || !suffixes.insert(k.suffix).second)
      fail(where, detail::concat("kind '", k.suffix, "' is empty or repeated"));
    if (k.elements_per_entry < 1)
      fail(where, detail::concat("kind '", k.suffix, "' has ", k.elements_per_entry, " elements an entry"));
  }
  if (!l.find_kind("master")) fail(where, "no \"master\" kind (the F32 master weights)");
}

// Each unit's slices cover it once, and begin on every kind's entry boundary.
void validate_slices(const CheckpointLayout& l, const std::string& where) {
  if (l.files.empty()) fail(where, "no rank files");
  for (size_t f = 0; f < l.files.size(); ++f) {
    if (l.files[f].size() != l.units.size()) {
      fail(where, detail::concat("rank file ", f, " has ", l.files[f].size(), " slices for ", l.units.size(),
                                 " units"));
    }
  }
  for (size_t u = 0; u < l.units.size(); ++u) {
    std::vector<EntrySpan> spans;
    for (size_t f = 0; f < l.files.size(); ++f) {
      const UnitSlice& s = l.files[f][u];
      if (s.begin < 0 || s.owned < 0 || (s.owned > 0 && s.begin > l.units[u].numel - s.owned)) {
        fail(where, detail::concat("rank file ", f, " holds elements [", s.begin, ", ", s.begin + s.owned,
                                   ") of unit '", l.units[u].name, "' of ", l.units[u].numel, " elements"));
      }
      for (size_t k = 0; k < l.kinds.size(); ++k) {
        if (s.owned > 0 && s.begin % l.kinds[k].elements_per_entry != 0) {
          fail(where,
               detail::concat("rank file ", f, "'s slice of unit '", l.units[u].name, "' begins at element ",
                              s.begin, ", inside a group of ", l.kinds[k].elements_per_entry,
                              " elements of '", l.kinds[k].suffix, "'"));
        }
      }
      spans.push_back({s.begin, s.owned});
    }
    try {
      reslice_pieces(spans, {0, l.units[u].numel});
    } catch (const Error& e) {
      fail(where,
           detail::concat("the slices of unit '", l.units[u].name, "' do not cover it once: ", e.what()));
    }
  }
}

}  // namespace

std::string unit_tensor_name(const std::string& unit, const std::string& suffix) {
  return detail::concat(unit, ".", suffix);
}

int64_t CheckpointLayout::whole_entries(size_t unit, size_t kind) const {
  const int64_t per = kinds.at(kind).elements_per_entry;
  return (units.at(unit).numel + per - 1) / per;
}

EntrySpan CheckpointLayout::stored_entries(size_t file, size_t unit, size_t kind) const {
  const UnitSlice& s = files.at(file).at(unit);
  if (s.owned == 0) return {0, 0};
  return entries_of_slice(s.begin, s.owned, kinds.at(kind).elements_per_entry);
}

std::optional<size_t> CheckpointLayout::find_kind(const std::string& suffix) const {
  for (size_t k = 0; k < kinds.size(); ++k) {
    if (kinds[k].suffix == suffix) return k;
  }
  return std::nullopt;
}

void CheckpointLayout::validate(const std::string& where) const {
  validate_units(*this, where);
  validate_kinds(*this, where);
  validate_slices(*this, where);
}

nlohmann::json CheckpointLayout::to_json() const {
  nlohmann::json j;
  j["units"] = nlohmann::json::array();
  for (const CheckpointUnit& u : units) {
    nlohmann::json params = nlohmann::json::array();
    for (const CheckpointParam& p : u.params)
      params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}});
    j["units"].push_back({{"name", u.name}, {"numel", u.numel}, {"params", std::move(params)}});
  }
  j["kinds"] = nlohmann::json::array();
  for (const UnitTensorKind& k : kinds) {
    j["kinds"].push_back({{"suffix", k.suffix},
                          {"dtype", std::string(dtype_name(k.dtype))},
                          {"elements_per_entry", k.elements_per_entry}});
  }
  j["files"] = nlohmann::json::array();
  for (size_t f = 0; f < files.size(); ++f) {
    nlohmann::json slices = nlohmann::json::array();
    for (const UnitSlice& s : files[f]) slices.push_back({s.begin, s.owned});
    j["files"].push_back(
        {{"file", checkpoint_rank_file_name(static_cast<int>(f))}, {"slices", std::move(slices)}});
  }
  return j;
}

CheckpointLayout CheckpointLayout::from_json(const nlohmann::json& j, const std::string& where) {
  CheckpointLayout l;
  try {
    for (const nlohmann::json& u : j.at("units")) {
      CheckpointUnit unit{u.at("name").get<std::string>(), u.at("numel").get<int64_t>(), {}};
      for (const nlohmann::json& p : u.at("params")) {
        unit.params.push_back(
            {p.at("name").get<std::string>(), p.at("shape").get<Shape>(), p.at("offset").get<int64_t>()});
      }
      l.units.push_back(std::move(unit));
    }
    for (const nlohmann::json& k : j.at("kinds")) {
      const std::string dtype = k.at("dtype").get<std::string>();
      DType parsed = DType::F32;
      try {
        parsed = dtype_from_name(dtype);
      } catch (const InvalidArgument&) {
        fail(where, detail::concat("kind '", k.at("suffix").get<std::string>(), "' has unknown dtype '",
                                   dtype, "'"));
      }
      l.kinds.push_back(
          {k.at("suffix").get<std::string>(), parsed, k.at("elements_per_entry").get<int64_t>()});
    }
    for (const nlohmann::json& f : j.at("files")) {
      const std::string expected = checkpoint_rank_file_name(static_cast<int>(l.files.size()));
      if (f.at("file").get<std::string>() != expected) {
        fail(where, detail::concat("file ", l.files.size(), " is '", f.at("file").get<std::string>(),
                                   "', not '", expected, "'"));
      }
      std::vector<UnitSlice> slices;
      for (const nlohmann::json& s : f.at("slices")) {
        if (!s.is_array() || s.size() != 2)
          fail(where, detail::concat("a slice is ", s.dump(), ", not [begin, owned]"));
        slices.push_back({s[0].get<int64_t>(), s[1].get<int64_t>()});
      }
      l.files.push_back(std::move(slices));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(where, detail::concat("malformed (", e.what(), ")"));
  }
  l.validate(where);
  return l;
}

std::optional<std::string> layout_difference(const CheckpointLayout& checkpoint,
                                             const CheckpointLayout& run) {
  const auto differ = [](const std::string& key, const auto& a, const auto& b) {
    return std::optional<std::string>(detail::concat(key, ": checkpoint ", a, ", this run ", b));
  };
  if (checkpoint.units.size() != run.units.size())
    return differ("number of units", checkpoint.units.size(), run.units.size());
  for (size_t u = 0; u < run.units.size(); ++u) {
    const CheckpointUnit &a = checkpoint.units[u], &b = run.units[u];
    const std::string key = detail::concat("unit ", u, " ('", b.name, "')");
    if (a.name != b.name) return differ(key + " name", "'" + a.name + "'", "'" + b.name + "'");
    if (a.numel != b.numel) return differ(key + " numel", a.numel, b.numel);
    if (a.params.size() != b.params.size())
      return differ(key + " parameters", a.params.size(), b.params.size());
    for (size_t i = 0; i < a.params.size(); ++i) {
      const CheckpointParam &p = a.params[i], &q = b.params[i];
      const std::string pkey = detail::concat(key, " parameter ", i);
      if (p.name != q.name) return differ(pkey + " name", "'" + p.name + "'", "'" + q.name + "'");
      if (p.shape != q.shape)
        return differ("'" + q.name + "' shape", shape_json(p.shape), shape_json(q.shape));
      if (p.offset != q.offset) return differ("'" + q.name + "' offset", p.offset, q.offset);
    }
  }
  const auto kinds = [](const CheckpointLayout& l) {
    std::string s;
    for (const UnitTensorKind& k : l.kinds) {
      s += detail::concat(
          s.empty() ? "" : ", ", k.suffix, " ", dtype_name(k.dtype),
          k.elements_per_entry > 1 ? detail::concat(" per ", k.elements_per_entry, " elements") : "");
    }
    return "[" + s + "]";
  };
  if (kinds(checkpoint) != kinds(run))
    return differ("stored tensors per unit", kinds(checkpoint), kinds(run));
  return std::nullopt;
}

}  // namespace coat::io
