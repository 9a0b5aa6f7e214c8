// Hugging Face safetensors: header serialisation with nlohmann::ordered_json (insertion order), and the
// reader's validation of the header against the file.
#include "coat/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"
#include "coat/io/mapped_file.h"
#include "coat/io/tensor_bytes.h"

namespace coat::io {
namespace {

// The reference implementation refuses larger headers; so do we (a wrong file otherwise maps 100 MB of
// garbage into the JSON parser).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";

struct FormatDType {
  std::string_view name;
  uint32_t bits;
};
// Every dtype of the format, with its width, so that byte lengths can be checked even for tensors we
// cannot represent.
constexpr FormatDType kFormatDTypes[] = {
    {"BOOL", 8}, {"U8", 8},   {"I8", 8},    {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
    {"U16", 16}, {"F16", 16}, {"BF16", 16}, {"I32", 32},    {"U32", 32},    {"F32", 32},    {"F64", 64},
    {"I64", 64}, {"U64", 64}, {"F4", 4},    {"F6_E2M3", 6}, {"F6_E3M2", 6},
};

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw IoError(detail::concat("safetensors file ", path, ": ", what));
}

}  // namespace

std::string_view safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::E4M3:
      return "F8_E4M3";
    case DType::E5M2:
      return "F8_E5M2";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::U8:
      return "U8";
    case DType::U16:
      return "U16";
    case DType::U32:
      return "U32";
  }
  throw InvalidArgument(detail::concat("[safetensors] no safetensors dtype for ", dtype_name(dtype)));
}

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  for (DType t : kAllDTypes) {
    if (safetensors_dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsTensorSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    COAT_ARG_CHECK(tensor.defined(), "write_safetensors", path, ": tensor '", name, "' is undefined");
    specs.push_back({name, tensor.dtype(), tensor.shape()});
  }
  write_safetensors_streamed(path, specs, [&](size_t i) { return tensors[i].second; }, metadata);
}

void write_safetensors_streamed(const std::filesystem::path& path,
                                const std::vector<SafetensorsTensorSpec>& specs,
                                const std::function<Tensor(size_t index)>& produce,
                                const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t data_bytes = 0;
  for (const SafetensorsTensorSpec& spec : specs) {
    COAT_ARG_CHECK(!spec.name.empty(), "write_safetensors", path, ": a tensor has an empty name");
    COAT_ARG_CHECK(spec.name != kMetadataKey, "write_safetensors", path, ": '", kMetadataKey,
                   "' is reserved and cannot name a tensor");
    COAT_ARG_CHECK(!header.contains(spec.name), "write_safetensors", path, ": tensor name '", spec.name,
                   "' appears twice");
    nlohmann::ordered_json info;
    info["dtype"] = std::string(safetensors_dtype_name(spec.dtype));
    info["shape"] = spec.shape;
    info["data_offsets"] = {data_bytes, data_bytes + spec.bytes()};
    data_bytes += spec.bytes();
    header[spec.name] = std::move(info);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = text.size();
  uint8_t length[8];
  std::memcpy(length, &header_bytes, 8);  // little-endian hosts only (x86-64, aarch64)

  auto host = std::make_shared<CpuContext>();
  write_file_atomically(path, [&](AtomicFile& file) {
    file.write(length, sizeof(length));
    file.write(text);
    for (size_t i = 0; i < specs.size(); ++i) {
      const Tensor tensor = produce(i);
      const std::string got = tensor.defined()
                                  ? detail::concat(dtype_name(tensor.dtype()), " ", shape_str(tensor.shape()))
                                  : std::string("undefined");
      COAT_ARG_CHECK(tensor.defined() && tensor.dtype() == specs[i].dtype && tensor.shape() == specs[i].shape,
                     "write_safetensors", path, ": tensor '", specs[i].name, "' was declared ",
                     dtype_name(specs[i].dtype), " ", shape_str(specs[i].shape), " but is ", got);
      const Tensor bytes = host_contiguous(tensor, host);
      file.write(bytes.data_ptr(), bytes.nbytes());
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Reader

struct SafetensorsReader::State {
  MappedFile file;
  uint64_t data_offset = 0;
  std::vector<SafetensorsEntry> entries;
  std::unordered_map<std::string, size_t> by_name;
  std::map<std::string, std::string> metadata;
};

namespace {

SafetensorsEntry parse_entry(const std::string& name, const nlohmann::ordered_json& info,
                             const std::filesystem::path& path) {
  SafetensorsEntry e;
  e.name = name;
  try {
    if (!info.is_object())
      fail(path, detail::concat("tensor '", name, "': expected an object, found ", info.dump()));
    e.dtype_string = info.at("dtype").get<std::string>();
    const auto& shape = info.at("shape");
    const auto& offsets = info.at("data_offsets");
    if (!shape.is_array()) fail(path, detail::concat("tensor '", name, "' has no shape array"));
    for (const auto& d : shape) {
      if (!d.is_number_unsigned())
        fail(path, detail::concat("tensor '", name, "' has a bad shape ", shape.dump()));
      e.shape.push_back(d.get<int64_t>());
      if (e.shape.back() < 0)
        fail(path, detail::concat("tensor '", name, "' has a bad shape ", shape.dump()));
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      fail(path, detail::concat("tensor '", name, "' has bad data_offsets ", offsets.dump(),
                                " (expected [begin, end])"));
    }
    e.begin = offsets[0].get<uint64_t>();
    e.end = offsets[1].get<uint64_t>();
  } catch (const nlohmann::json::exception& ex) {
    fail(path, detail::concat("tensor '", name, "' is malformed (", ex.what(), ")"));
  }
  const auto format = std::find_if(std::begin(kFormatDTypes), std::end(kFormatDTypes),
                                   [&](const FormatDType& f) { return f.name == e.dtype_string; });
  if (format == std::end(kFormatDTypes)) {
    fail(path, detail::concat("tensor '", name, "' has unknown dtype '", e.dtype_string, "'"));
  }
  e.dtype = dtype_from_safetensors(e.dtype_string);
  if (e.end < e.begin) {
    fail(path, detail::concat("tensor '", name, "' has data_offsets [", e.begin, ", ", e.end,
                              ") with end < begin"));
  }
  uint64_t bits = format->bits;
  bool overflow = false;
  for (int64_t d : e.shape) overflow |= __builtin_mul_overflow(bits, static_cast<uint64_t>(d), &bits);
  const uint64_t expected = (bits + 7) / 8;
  if (overflow || expected != e.end - e.begin) {
    fail(path,
         detail::concat("tensor '", name, "' is ", e.dtype_string, " ", shape_str(e.shape), " (",
                        overflow ? "too many" : std::to_string(expected), " bytes) but its data_offsets [",
                        e.begin, ", ", e.end, ") span ", e.end - e.begin, " bytes"));
  }
  return e;
}

}  // namespace

SafetensorsReader SafetensorsReader::open(const std::filesystem::path& path) {
  auto state = std::make_shared<State>();
  state->file = MappedFile::open(path, "safetensors file");
  const uint8_t* bytes = state->file.data();
  const uint64_t size = state->file.size();
  if (size < 8)
    fail(path, detail::concat("truncated: ", size, " bytes, shorter than the 8-byte header length"));
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes, 8);
  if (header_bytes > kMaxHeaderBytes) {
    fail(path, detail::concat("header length ", header_bytes, " exceeds the format's limit of ",
                              kMaxHeaderBytes, " bytes (not a safetensors file?)"));
  }
  if (8 + header_bytes > size) {
    fail(path, detail::concat("truncated: the header needs ", 8 + header_bytes, " bytes but the file has ",
                              size, " bytes"));
  }
  const char* text = reinterpret_cast<const char*>(bytes + 8);
  if (header_bytes == 0 || text[0] != '{')
    fail(path, "the header is not a JSON object (not a safetensors file?)");
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(text, text + header_bytes);
  } catch (const nlohmann::json::exception& ex) {
    fail(path, detail::concat("the header is not valid JSON (", ex.what(), ")"));
  }
  if (!header.is_object()) fail(path, "the header is not a JSON object");
  state->data_offset = 8 + header_bytes;
  const uint64_t data_bytes = size - state->data_offset;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) fail(path, "__metadata__ is not an object of strings");
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          fail(path, detail::concat("__metadata__ value of '", mkey, "' is not a string: ", mvalue.dump()));
        }
        state->metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    SafetensorsEntry e = parse_entry(key, value, path);
    if (e.end > data_bytes) {
      fail(path, detail::concat("truncated: tensor '", key, "' occupies bytes [", e.begin, ", ", e.end,
                                ") of the data section but the file has only ", data_bytes, " data bytes (",
                                size, " bytes in all)"));
    }
    state->by_name.emplace(key, state->entries.size());
    state->entries.push_back(std::move(e));
  }
  // The entries must tile [0, data_bytes) without gaps or overlaps.
  std::vector<const SafetensorsEntry*> sorted;
  for (const SafetensorsEntry& e : state->entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : sorted) {
    if (e->begin != covered) {
      fail(path,
           detail::concat("tensor '", e->name, "' starts at data byte ", e->begin, " but ",
                          previous ? "'" + previous->name + "' ends" : std::string("the data section starts"),
                          " at ", covered, e->begin < covered ? " (overlap)" : " (gap)"));
    }
    covered = e->end;
    previous = e;
  }
  if (covered != data_bytes) {
    fail(path, detail::concat("the tensors cover ", covered, " data bytes but the file has ", data_bytes,
                              " after its header (trailing bytes)"));
  }
  SafetensorsReader reader;
  reader.state_ = std::move(state);
  return reader;
}

const SafetensorsReader::State& SafetensorsReader::state() const {
  if (!state_) throw InvalidArgument("[SafetensorsReader] used before open()");
  return *state_;
}

const std::filesystem::path& SafetensorsReader::path() const {
  return state().file.path();
}
const std::vector<SafetensorsEntry>& SafetensorsReader::entries() const {
  return state().entries;
}
const std::map<std::string, std::string>& SafetensorsReader::metadata() const {
  return state().metadata;
}
uint64_t SafetensorsReader::data_offset() const {
  return state().data_offset;
}
bool SafetensorsReader::contains(const std::string& name) const {
  return state().by_name.count(name) > 0;
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  const State& s = state();
  const auto it = s.by_name.find(name);
  if (it != s.by_name.end()) return s.entries[it->second];
  std::string some;
  constexpr size_t kListed = 8;
  for (size_t i = 0; i < s.entries.size() && i < kListed; ++i) some += (i ? ", " : "") + s.entries[i].name;
  if (s.entries.size() > kListed) some += ", ...";
  throw InvalidArgument(detail::concat("safetensors file ", s.file.path(), " has no tensor '", name,
                                       "' (it has ", s.entries.size(), " tensors",
                                       s.entries.empty() ? "" : ": ", some, ")"));
}

Tensor SafetensorsReader::read(const std::string& name, const ContextPtr& context,
                               MemoryCategory category) const {
  const SafetensorsEntry& e = entry(name);
  COAT_ARG_CHECK(e.dtype.has_value(), "safetensors", "tensor '", name, "' of ", path(), " has dtype ",
                 e.dtype_string, ", which coat has no dtype for");
  Tensor out = Tensor::empty(context ? context : std::make_shared<CpuContext>(), e.shape, *e.dtype, category);
  read_into(name, out);
  return out;
}

void SafetensorsReader::read_into(const std::string& name, Tensor& dst) const {
  const SafetensorsEntry& e = entry(name);
  COAT_ARG_CHECK(dst.defined(), "safetensors", "undefined destination for tensor '", name, "'");
  COAT_ARG_CHECK(e.dtype.has_value(), "safetensors", "tensor '", name, "' of ", path(), " has dtype ",
                 e.dtype_string, ", which coat has no dtype for");
  if (dst.shape() != e.shape) {
    throw InvalidArgument(detail::concat("safetensors tensor '", name, "' has shape ", shape_str(e.shape),
                                         " but the model expects ", shape_str(dst.shape()), " (file ", path(),
                                         ")"));
  }
  if (dst.dtype() != *e.dtype) {
    throw InvalidArgument(detail::concat("safetensors tensor '", name, "' is ", e.dtype_string,
                                         " but the model expects ", safetensors_dtype_name(dst.dtype()),
                                         " (file ", path(), "; cast after reading)"));
  }
  copy_bytes_into(state().file.data() + state().data_offset + e.begin, dst);
}

}  // namespace coat::io
