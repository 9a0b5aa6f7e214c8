// What a format-2 checkpoint's meta.json says about its rank files ("layout"): the model's flat units (name,
// elements, and each parameter's HF name, shape and offset in its unit), the kinds of tensor stored per unit
// (the F32 masters, each optimizer state tensor: codes one entry per element, group metadata one entry per
// group), and the slice of every unit that each rank file holds. A reader assembles any range of any unit
// from it (reslice.h), whatever the world size that wrote it.
//
//   "layout": {"units": [{"name": "embed", "numel": 2048,
//                         "params": [{"name": "model.embed_tokens.weight", "shape": [64, 32], "offset": 0}]},
//                         ...],
//              "kinds": [{"suffix": "master", "dtype": "f32", "elements_per_entry": 1},
//                        {"suffix": "exp_avg.log2_scale", "dtype": "f32", "elements_per_entry": 128}, ...],
//              "files": [{"file": "rank_00000.bin", "slices": [[0, 512], [0, 2432], ...]}, ...]}
//
// Rank file i holds, for every unit u with a non-empty slice [begin, begin + owned) and every kind k, the
// tensor
// "<u>.<k>" (unit_tensor_name) with the entries of that slice (entries_of_slice).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "coat/core/tensor.h"
#include "coat/io/reslice.h"

namespace coat::io {

struct CheckpointParam {
  std::string name;  ///< HF name
  Shape shape;
  int64_t offset = 0;  ///< of its first element in the unit
};

struct CheckpointUnit {
  std::string name;
  int64_t numel = 0;  ///< elements of the whole flat unit (alignment padding included)
  std::vector<CheckpointParam> params;
};

/// One tensor stored per unit: "master" (one entry per element), "exp_avg" (codes), "exp_avg.log2_scale"
/// (one entry per state group), ...
struct UnitTensorKind {
  std::string suffix;
  DType dtype = DType::F32;
  int64_t elements_per_entry = 1;
};

/// Unit elements [begin, begin + owned) held by one rank file.
struct UnitSlice {
  int64_t begin = 0;
  int64_t owned = 0;
};

struct CheckpointLayout {
  std::vector<CheckpointUnit> units;
  std::vector<UnitTensorKind> kinds;
  std::vector<std::vector<UnitSlice>> files;  ///< per rank file (rank_<i>.bin), one slice per unit

  /// Entries of kind `kind` over the whole of unit `unit`: ceil(numel / elements_per_entry).
  int64_t whole_entries(size_t unit, size_t kind) const;
  /// The entries of kind `kind` that rank file `file` stores of unit `unit`.
  EntrySpan stored_entries(size_t file, size_t unit, size_t kind) const;
  std::optional<size_t> find_kind(const std::string& suffix) const;

  /// Checks that every kind and unit name is unique, the parameters lie inside their units, every file has
  /// one slice per unit, each unit's slices cover it exactly once and begin on every kind's entry boundary.
  /// IoError "checkpoint layout (<where>): ..." naming what is wrong.
  void validate(const std::string& where) const;
  nlohmann::json to_json() const;
  /// Parses and validates; IoError naming `where` and the key when the JSON is malformed.
  static CheckpointLayout from_json(const nlohmann::json& j, const std::string& where);
};

/// "<unit>.<suffix>": the name of a unit tensor in a rank file.
std::string unit_tensor_name(const std::string& unit, const std::string& suffix);

/// Where two layouts describe different models or optimizer states (units, parameters, kinds; the files may
/// differ: that is a re-slice): "unit 'layers.0' numel: checkpoint 9344, this run 9280", or nullopt.
std::optional<std::string> layout_difference(const CheckpointLayout& checkpoint, const CheckpointLayout& run);

}  // namespace coat::io
