// The checkpoint reader: meta.json verified against COMPLETE, the one-process tensors of either format, and
// ranged reads assembled from the rank files that hold the pieces.
#include "coat/io/checkpoint_reader.h"

#include <atomic>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "coat/core/error.h"
#include "coat/io/checkpoint.h"
#include "coat/io/checkpoint_manifest.h"
#include "coat/io/checksum.h"

namespace coat::io {

namespace {

/// Where a format-2 tensor comes from: entries of one kind of one unit, from `first_entry` on.
struct Source {
  size_t unit = 0;
  size_t kind = 0;
  int64_t first_entry = 0;
};

std::string read_text(const std::filesystem::path& path, const std::filesystem::path& dir) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(detail::concat("checkpoint ", dir, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

struct CheckpointReader::State {
  std::filesystem::path dir;
  CheckpointManifest manifest;
  nlohmann::json meta;
  int format_version = 1;
  int64_t step = 0;
  int world_size = 1;
  int io_threads = 1;
  std::optional<CheckpointLayout> layout;
  std::vector<CheckpointTensorInfo> infos;
  std::vector<Source> sources;  ///< format 2, parallel to infos
  std::unordered_map<std::string, size_t> by_name;
  mutable std::mutex mutex;
  mutable std::vector<std::optional<TensorFileReader>> files;
  mutable bool all_files_verified = false;            ///< mark_all_files_verified (under mutex)
  mutable std::atomic<uint64_t> whole_file_bytes{0};  ///< checksummed by verify_file

  int file_count() const { return layout ? static_cast<int>(layout->files.size()) : 1; }
  const TensorFileReader& file(int index) const;
  void check_rank_file(int index, const TensorFileReader& f) const;
  void parse_meta_fields();
  void add_format2_tensors();
};

namespace {

// meta.json's bytes against COMPLETE's record, then parsed.
nlohmann::json read_meta(const std::filesystem::path& dir, const CheckpointManifest& manifest) {
  const std::filesystem::path path = dir / kCheckpointMetaFile;
  const std::string text = read_text(path, dir);
  if (manifest.meta) {
    const uint32_t crc = crc32c(text.data(), text.size());
    if (text.size() != manifest.meta->bytes || crc != manifest.meta->crc32c) {
      throw IoError(detail::concat("checkpoint ", dir, ": meta.json has ", text.size(),
                                   " bytes with CRC-32C ", crc32c_hex(crc), " but COMPLETE records ",
                                   manifest.meta->bytes, " bytes with ", crc32c_hex(manifest.meta->crc32c),
                                   ": meta.json was edited or is damaged"));
    }
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(detail::concat("checkpoint ", dir, ": ", path.filename(), " is damaged (", e.what(), ")"));
  }
}

}  // namespace

const TensorFileReader& CheckpointReader::State::file(int index) const {
  COAT_ARG_CHECK(index >= 0 && index < file_count(), "CheckpointReader", "rank file ", index,
                 " of checkpoint ", dir, ", which has ", file_count());
  const std::lock_guard<std::mutex> lock(mutex);
  std::optional<TensorFileReader>& f = files[static_cast<size_t>(index)];
  if (!f) {
    const std::string name = checkpoint_rank_file_name(index);
    if (static_cast<size_t>(index) < manifest.files.size())
      check_file_size(dir, manifest.files[static_cast<size_t>(index)]);
    TensorFileReader reader = TensorFileReader::open(dir / name);
    check_rank_file(index, reader);
    if (all_files_verified) reader.mark_verified();
    f = std::move(reader);
  }
  return *f;
}

// Every tensor the layout says the file holds is there, with the layout's dtype and entry count.
void CheckpointReader::State::check_rank_file(int index, const TensorFileReader& f) const {
  if (!layout) return;
  for (size_t u = 0; u < layout->units.size(); ++u) {
    for (size_t k = 0; k < layout->kinds.size(); ++k) {
      const EntrySpan span = layout->stored_entries(static_cast<size_t>(index), u, k);
      if (span.count == 0) continue;
      const std::string name = unit_tensor_name(layout->units[u].name, layout->kinds[k].suffix);
      if (!f.contains(name)) {
        throw IoError(detail::concat("rank file ", f.path(), " has no tensor '", name,
                                     "', which meta.json's layout puts there"));
      }
      const TensorFileEntry& e = f.entry(name);
      if (e.dtype != layout->kinds[k].dtype || e.numel() != span.count) {
        throw IoError(detail::concat("rank file ", f.path(), ": tensor '", name, "' is ", dtype_name(e.dtype),
                                     " ", shape_str(e.shape), " but meta.json's layout says ",
                                     dtype_name(layout->kinds[k].dtype), " (", span.count, ")"));
      }
    }
  }
}

void CheckpointReader::State::add_format2_tensors() {
  State& s = *this;
  const CheckpointLayout& l = *s.layout;
  const size_t master = *l.find_kind("master");
  for (size_t u = 0; u < l.units.size(); ++u) {
    for (const CheckpointParam& p : l.units[u].params) {
      s.infos.push_back({p.name, l.kinds[master].dtype, p.shape});
      s.sources.push_back({u, master, p.offset});
    }
    for (size_t k = 0; k < l.kinds.size(); ++k) {
      if (k == master) continue;
      s.infos.push_back(
          {unit_tensor_name(l.units[u].name, l.kinds[k].suffix), l.kinds[k].dtype, {l.whole_entries(u, k)}});
      s.sources.push_back({u, k, 0});
    }
  }
}

void CheckpointReader::State::parse_meta_fields() {
  State& s = *this;
  try {
    s.format_version = s.meta.at("format_version").get<int>();
    if (s.format_version != 1 && s.format_version != 2) {
      throw IoError(detail::concat("checkpoint ", dir, ": format version ", s.format_version,
                                   ", this build reads versions 1 and 2"));
    }
    s.step = s.meta.at("step").get<int64_t>();
    s.world_size = s.meta.at("world_size").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw IoError(detail::concat("checkpoint ", dir, ": \"meta.json\" is damaged (", e.what(), ")"));
  }
  if (s.world_size < 1)
    throw IoError(detail::concat("checkpoint ", dir, ": meta.json says world size ", s.world_size));
  if (s.step != s.manifest.step) {
    throw IoError(detail::concat("checkpoint ", dir, ": meta.json says step ", s.step, " but COMPLETE says ",
                                 s.manifest.step));
  }
  if (s.format_version == 2) {
    if (!s.meta.contains("layout"))
      throw IoError(detail::concat("checkpoint ", dir, ": format 2 without a \"layout\" in meta.json"));
    s.layout = CheckpointLayout::from_json(s.meta.at("layout"), detail::concat("checkpoint ", dir.string()));
  }
}

CheckpointReader CheckpointReader::open(const std::filesystem::path& dir, int io_threads) {
  check_io_threads(io_threads, "CheckpointReader");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw IoError(detail::concat("checkpoint ", dir, " does not exist or is not a directory"));
  }
  auto s = std::make_shared<State>();
  s->dir = dir;
  s->io_threads = io_threads;
  s->manifest = read_manifest(dir);
  s->meta = read_meta(dir, s->manifest);
  s->parse_meta_fields();
  if (!s->manifest.files.empty() && static_cast<int>(s->manifest.files.size()) != s->file_count()) {
    throw IoError(detail::concat("checkpoint ", dir, ": COMPLETE lists ", s->manifest.files.size(),
                                 " rank files but meta.json has ", s->file_count()));
  }
  s->files.resize(static_cast<size_t>(s->file_count()));
  if (s->layout) {
    s->add_format2_tensors();
  } else {
    for (const TensorFileEntry& e : s->file(0).entries()) s->infos.push_back({e.name, e.dtype, e.shape});
  }
  for (size_t i = 0; i < s->infos.size(); ++i) s->by_name.emplace(s->infos[i].name, i);
  CheckpointReader reader;
  reader.state_ = std::move(s);
  return reader;
}

const CheckpointReader::State& CheckpointReader::state() const {
  if (!state_) throw InvalidArgument("[CheckpointReader] used before open()");
  return *state_;
}

const std::filesystem::path& CheckpointReader::dir() const {
  return state().dir;
}
int CheckpointReader::format_version() const {
  return state().format_version;
}
int64_t CheckpointReader::step() const {
  return state().step;
}
int CheckpointReader::world_size() const {
  return state().world_size;
}
const nlohmann::json& CheckpointReader::meta() const {
  return state().meta;
}
const CheckpointLayout* CheckpointReader::layout() const {
  return state().layout ? &*state().layout : nullptr;
}
const std::vector<CheckpointTensorInfo>& CheckpointReader::tensors() const {
  return state().infos;
}
bool CheckpointReader::contains(const std::string& name) const {
  return state().by_name.count(name) > 0;
}
int CheckpointReader::io_threads() const {
  return state().io_threads;
}
int CheckpointReader::file_count() const {
  return state().file_count();
}
const TensorFileReader& CheckpointReader::file(int index) const {
  return state().file(index);
}

size_t CheckpointReader::index_of(const std::string& name) const {
  const State& s = state();
  const auto it = s.by_name.find(name);
  if (it != s.by_name.end()) return it->second;
  std::string some;
  constexpr size_t kListed = 8;
  for (size_t i = 0; i < s.infos.size() && i < kListed; ++i) some += (i ? ", " : "") + s.infos[i].name;
  if (s.infos.size() > kListed) some += ", ...";
  throw InvalidArgument(detail::concat("checkpoint ", s.dir, " has no tensor '", name, "' (it has ",
                                       s.infos.size(), " tensors", s.infos.empty() ? "" : ": ", some, ")"));
}

const CheckpointTensorInfo& CheckpointReader::info(const std::string& name) const {
  return state().infos[index_of(name)];
}

Tensor CheckpointReader::read(const std::string& name, const ContextPtr& context,
                              MemoryCategory category) const {
  const CheckpointTensorInfo& i = info(name);
  Tensor out = Tensor::empty(context ? context : std::make_shared<CpuContext>(), i.shape, i.dtype, category);
  read_into(name, out);
  return out;
}

void CheckpointReader::check_whole_read(const std::string& name, const Tensor& dst) const {
  const CheckpointTensorInfo& i = info(name);
  COAT_ARG_CHECK(dst.defined(), "read_into", "undefined destination for tensor '", name, "'");
  if (dst.shape() != i.shape) {
    throw InvalidArgument(detail::concat("checkpoint tensor '", name, "' has shape ", shape_str(i.shape),
                                         " but the model expects ", shape_str(dst.shape()), " (checkpoint ",
                                         dir(), ")"));
  }
  if (dst.dtype() != i.dtype) {
    throw InvalidArgument(detail::concat("checkpoint tensor '", name, "' is ", dtype_name(i.dtype),
                                         " but the model expects ", dtype_name(dst.dtype()), " (checkpoint ",
                                         dir(), ")"));
  }
}

void CheckpointReader::read_into(const std::string& name, Tensor& dst) const {
  check_whole_read(name, dst);
  if (!layout()) return file(0).read_into(name, dst);
  read_range_into(name, 0, dst);
}

void CheckpointReader::plan_range_read(const CheckpointRangeRead& read,
                                       std::vector<std::vector<TensorSliceRead>>& by_file) const {
  const State& s = state();
  const std::string& name = read.name;
  const size_t index = index_of(name);
  if (!s.layout) {
    by_file[0].push_back({name, read.element_offset, read.dst});  // checked by the file's batch
    return;
  }
  const Tensor& dst = read.dst;
  const int64_t element_offset = read.element_offset;
  COAT_ARG_CHECK(dst.defined(), "read_range", "undefined destination for tensor '", name, "'");
  const CheckpointTensorInfo& i = s.infos[index];
  const int64_t count = dst.numel(), numel = shape_numel(i.shape);
  COAT_ARG_CHECK(element_offset >= 0 && element_offset <= numel && count <= numel - element_offset,
                 "read_range", "elements [", element_offset, ", ", element_offset + count, ") of tensor '",
                 name, "' are outside its ", numel, " elements (checkpoint ", s.dir, ")");
  COAT_ARG_CHECK(dst.dtype() == i.dtype, "read_range", "tensor '", name, "' is ", dtype_name(i.dtype),
                 " but the destination is ", dtype_name(dst.dtype()), " (checkpoint ", s.dir, ")");
  COAT_ARG_CHECK(dst.is_contiguous(), "read_range", "the destination of tensor '", name,
                 "' is not contiguous");
  const Source& src = s.sources[index];
  std::vector<EntrySpan> stored;
  for (int f = 0; f < s.file_count(); ++f)
    stored.push_back(s.layout->stored_entries(static_cast<size_t>(f), src.unit, src.kind));
  std::vector<ReslicePiece> pieces;
  try {
    pieces = reslice_pieces(stored, {src.first_entry + element_offset, count});
  } catch (const IoError& e) {
    throw IoError(detail::concat("checkpoint ", s.dir, ": tensor '", name, "': ", e.what()));
  }
  const std::string stored_name =
      unit_tensor_name(s.layout->units[src.unit].name, s.layout->kinds[src.kind].suffix);
  const Tensor flat = dst.reshape({count});
  for (const ReslicePiece& p : pieces) {
    by_file[p.source].push_back(
        {stored_name, p.source_offset, flat.slice(0, p.dest_offset, p.dest_offset + p.count)});
  }
}

void CheckpointReader::read_range_into(const std::string& name, int64_t element_offset, Tensor& dst) const {
  read_ranges_into({{name, element_offset, dst}});
}

void CheckpointReader::read_ranges_into(const std::vector<CheckpointRangeRead>& reads) const {
  const State& s = state();
  std::vector<std::vector<TensorSliceRead>> by_file(static_cast<size_t>(s.file_count()));
  for (const CheckpointRangeRead& read : reads) plan_range_read(read, by_file);
  for (size_t f = 0; f < by_file.size(); ++f) {
    if (!by_file[f].empty()) file(static_cast<int>(f)).read_slices_into(by_file[f], s.io_threads);
  }
}

void CheckpointReader::read_into(const std::vector<std::pair<std::string, Tensor>>& reads) const {
  std::vector<CheckpointRangeRead> ranges;
  ranges.reserve(reads.size());
  for (const auto& [name, dst] : reads) {
    check_whole_read(name, dst);
    ranges.push_back({name, 0, dst});
  }
  read_ranges_into(ranges);
}

void CheckpointReader::verify_file(int index) const {
  const State& s = state();
  COAT_ARG_CHECK(index >= 0 && index < s.file_count(), "verify_file", "rank file ", index, " of checkpoint ",
                 s.dir, ", which has ", s.file_count());
  if (static_cast<size_t>(index) >= s.manifest.files.size())
    return file(index).verify_all(s.io_threads);  // an earlier build's
  const ManifestFile& record = s.manifest.files[static_cast<size_t>(index)];
  try {
    check_file_checksum(s.dir, record, s.io_threads);
  } catch (const IoError& whole) {
    // Name the damaged tensor where one is (each tensor's own checksum): opening checks the index, verify_all
    // every tensor.
    file(index).verify_all(s.io_threads);
    throw IoError(detail::concat(whole.what(),
                                 " (every tensor's own checksum matches: the damage is in its header, "
                                 "index or padding)"));
  }
  s.whole_file_bytes.fetch_add(record.bytes, std::memory_order_relaxed);
  file(index).mark_verified();  // every byte matched: its tensors' own checksums would match too
}

void CheckpointReader::verify_all() const {
  for (int f = 0; f < file_count(); ++f) verify_file(f);
}

void CheckpointReader::mark_all_files_verified() const {
  const State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.all_files_verified = true;
  for (const std::optional<TensorFileReader>& f : s.files) {
    if (f) f->mark_verified();
  }
}

uint64_t CheckpointReader::checksummed_bytes() const {
  const State& s = state();
  uint64_t bytes = s.whole_file_bytes.load(std::memory_order_relaxed);
  const std::lock_guard<std::mutex> lock(s.mutex);
  for (const std::optional<TensorFileReader>& f : s.files) {
    if (f) bytes += f->checksummed_bytes();
  }
  return bytes;
}

}  // namespace coat::io
