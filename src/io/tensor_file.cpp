// Native tensor files: the writer (the file sized first, the tensors' pieces checksummed and pwritten at
// their offsets by the I/O threads, the header and index written last) and the memory-mapped reader with its
// validation and its batch reads (checksums verified and bytes copied by pieces on the I/O threads).
#include "coat/io/tensor_file.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "coat/core/error.h"
#include "coat/io/atomic_file.h"
#include "coat/io/checksum.h"
#include "coat/io/mapped_file.h"
#include "coat/io/parallel_io.h"
#include "coat/io/staged_upload.h"
#include "coat/io/tensor_bytes.h"

namespace coat::io {
namespace {

constexpr uint64_t align_up(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

// Byte offsets of the header fields.
constexpr size_t kVersionAt = 8, kIndexBytesAt = 16, kIndexCrcAt = 24, kDataOffsetAt = 32, kDataBytesAt = 40;

template <typename T>
void put(uint8_t* header, size_t at, T value) {
  std::memcpy(header + at, &value, sizeof(T));
}
template <typename T>
T get(const uint8_t* header, size_t at) {
  T value;
  std::memcpy(&value, header + at, sizeof(T));
  return value;
}

std::string index_json(const std::vector<TensorFileEntry>& entries, uint64_t data_offset) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const TensorFileEntry& e : entries) {
    nlohmann::ordered_json item;
    item["name"] = e.name;
    item["dtype"] = std::string(dtype_name(e.dtype));
    item["shape"] = e.shape;
    item["offset"] = e.offset - data_offset;
    item["bytes"] = e.bytes;
    item["crc32c"] = crc32c_hex(e.crc32c);  // fixed width: the index length does not depend on the values
    list.push_back(std::move(item));
  }
  nlohmann::ordered_json index;
  index["tensors"] = std::move(list);
  return index.dump();
}

}  // namespace

namespace {

// Plans the entries of `tensors` (offsets relative to the data section until data_offset is known).
std::vector<TensorFileEntry> plan_entries(const std::filesystem::path& path,
                                          const std::vector<std::pair<std::string, Tensor>>& tensors,
                                          uint64_t& data_bytes) {
  std::unordered_set<std::string> names;
  std::vector<TensorFileEntry> entries;
  entries.reserve(tensors.size());
  data_bytes = 0;
  for (const auto& [name, tensor] : tensors) {
    COAT_ARG_CHECK(!name.empty(), "write_tensor_file", path, ": a tensor has an empty name");
    COAT_ARG_CHECK(names.insert(name).second, "write_tensor_file", path, ": tensor name '", name,
                   "' appears twice");
    COAT_ARG_CHECK(tensor.defined(), "write_tensor_file", path, ": tensor '", name, "' is undefined");
    TensorFileEntry e;
    e.name = name;
    e.dtype = tensor.dtype();
    e.shape = tensor.shape();
    e.bytes = tensor.nbytes();
    e.offset = align_up(data_bytes, kTensorFileAlignment);
    data_bytes = e.offset + e.bytes;
    entries.push_back(std::move(e));
  }
  return entries;
}

// Where the tensors start: after the header and an index of `index_bytes`, aligned.
uint64_t data_offset_after(uint64_t index_bytes) {
  return align_up(kTensorFileHeaderBytes + index_bytes, kTensorFileAlignment);
}

// Zeros between the index (ending at `index_end`) and the first tensor, and between the tensors: a new file
// reads zeros there anyway, a recycled one holds old bytes (file_crc counts zeros).
void write_padding(AtomicFile& file, const std::vector<TensorFileEntry>& entries, uint64_t index_end) {
  static constexpr uint8_t kZeros[kTensorFileAlignment] = {};
  uint64_t at = index_end;
  for (const TensorFileEntry& e : entries) {
    while (at < e.offset) {
      const uint64_t n = std::min<uint64_t>(e.offset - at, sizeof(kZeros));
      file.write_at(at, kZeros, n);
      at += n;
    }
    at = e.offset + e.bytes;
  }
}

// The tensors' bytes at their offsets (the file already has its final size; write_padding zeroed the gaps),
// each entry's crc32c filled in. The calling thread stages each tensor on the host in order (device copies
// stay on it); the pool's threads checksum and pwrite pieces of at most chunk_bytes. At most about twice as
// many pieces as threads wait, so only a few staged copies are alive at once.
void write_data(AtomicFile& file, const std::vector<std::pair<std::string, Tensor>>& tensors,
                std::vector<TensorFileEntry>& entries, const TensorFileWriteOptions& options) {
  auto host = std::make_shared<CpuContext>();
  std::vector<std::vector<ByteRange>> pieces(entries.size());
  std::vector<std::vector<uint32_t>> crcs(entries.size());
  TaskPool pool(options.io_threads);
  for (size_t i = 0; i < entries.size() && !pool.failed(); ++i) {
    const TensorFileEntry& e = entries[i];
    pieces[i] = split_bytes(e.bytes, options.chunk_bytes);
    crcs[i].resize(pieces[i].size());
    if (pieces[i].empty()) continue;
    const Tensor bytes = host_contiguous(tensors[i].second, host);
    for (size_t c = 0; c < pieces[i].size(); ++c) {
      pool.wait_while_pending(2 * static_cast<size_t>(options.io_threads));
      pool.submit([&file, &e, &options, bytes, piece = pieces[i][c], crc = &crcs[i][c]] {
        const uint8_t* data = static_cast<const uint8_t*>(bytes.data_ptr()) + piece.offset;
        try {
          file.write_at(e.offset + piece.offset, data, piece.bytes);
          if (options.write_back) file.write_back_and_drop(e.offset + piece.offset, piece.bytes);
        } catch (const IoError& error) {
          throw IoError(detail::concat(error.what(), " (tensor '", e.name, "', bytes [", piece.offset, ", ",
                                       piece.offset + piece.bytes, ") of its ", e.bytes, ")"));
        }
        *crc = crc32c(data, piece.bytes);  // of the bytes just written, still in the cache
      });
    }
  }
  pool.wait();
  for (size_t i = 0; i < entries.size(); ++i) {
    uint32_t crc = 0;
    for (size_t c = 0; c < pieces[i].size(); ++c) crc = crc32c_combine(crc, crcs[i][c], pieces[i][c].bytes);
    entries[i].crc32c = crc;
  }
}

// The CRC-32C of every byte of the file from its parts: header, index, zero padding, and each tensor's own
// checksum after the zeros before it.
uint32_t file_crc(const uint8_t* header, const std::string& index,
                  const std::vector<TensorFileEntry>& entries, uint64_t file_bytes) {
  uint32_t crc = crc32c(header, kTensorFileHeaderBytes);
  crc = crc32c_extend(crc, index.data(), index.size());
  uint64_t at = kTensorFileHeaderBytes + index.size();
  for (const TensorFileEntry& e : entries) {
    crc = crc32c_combine(crc32c_extend_zeros(crc, e.offset - at), e.crc32c, e.bytes);
    at = e.offset + e.bytes;
  }
  return crc32c_extend_zeros(crc, file_bytes - at);
}

}  // namespace

TensorFileWriteOptions::TensorFileWriteOptions() : io_threads(default_io_threads()) {}

uint64_t tensor_file_bytes(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  uint64_t data_bytes = 0;
  const std::vector<TensorFileEntry> entries = plan_entries("tensor_file_bytes", tensors, data_bytes);
  return data_offset_after(index_json(entries, 0).size()) + data_bytes;
}

TensorFileSummary write_tensor_file(const std::filesystem::path& path,
                                    const std::vector<std::pair<std::string, Tensor>>& tensors,
                                    const TensorFileWriteOptions& options) {
  check_io_threads(options.io_threads, "write_tensor_file");
  COAT_ARG_CHECK(options.chunk_bytes > 0, "write_tensor_file", "chunk_bytes is 0");
  uint64_t data_bytes = 0;
  std::vector<TensorFileEntry> entries = plan_entries(path, tensors, data_bytes);
  const size_t index_bytes = index_json(entries, 0).size();
  const uint64_t data_offset = data_offset_after(index_bytes);
  for (TensorFileEntry& e : entries) e.offset += data_offset;

  TensorFileSummary summary;
  summary.bytes = data_offset + data_bytes;
  const auto fill = [&](AtomicFile& file) {
    file.resize(summary.bytes);  // header and index are written last, once the checksums are known
    write_padding(file, entries, kTensorFileHeaderBytes + index_bytes);
    write_data(file, tensors, entries, options);
    const std::string index = index_json(entries, data_offset);
    COAT_CHECK(index.size() == index_bytes, Error, "[write_tensor_file] index length changed from ",
               index_bytes, " to ", index.size(), " bytes");
    uint8_t header[kTensorFileHeaderBytes] = {};
    std::memcpy(header, kTensorFileMagic, sizeof(kTensorFileMagic));
    put<uint32_t>(header, kVersionAt, kTensorFileVersion);
    put<uint64_t>(header, kIndexBytesAt, index.size());
    put<uint32_t>(header, kIndexCrcAt, crc32c(index.data(), index.size()));
    put<uint64_t>(header, kDataOffsetAt, data_offset);
    put<uint64_t>(header, kDataBytesAt, data_bytes);
    file.write_at(0, header, sizeof(header));
    file.write_at(kTensorFileHeaderBytes, index.data(), index.size());
    summary.crc32c = file_crc(header, index, entries, summary.bytes);
  };
  write_file_atomically(path, fill, options.recycle);
  return summary;
}

// ---------------------------------------------------------------------------------------------------------
// Reader

struct TensorFileReader::State {
  MappedFile file;
  std::vector<TensorFileEntry> entries;
  std::unordered_map<std::string, size_t> by_name;
  std::unique_ptr<std::atomic<bool>[]> verified;
  mutable std::atomic<uint64_t> checksummed_bytes{0};
  uint32_t index_crc32c = 0;
};

namespace {

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw IoError(detail::concat("tensor file ", path, ": ", what));
}

uint64_t checked_numel_bytes(const Shape& shape, DType dtype, bool& overflow) {
  uint64_t n = dtype_size(dtype);
  overflow = false;
  for (int64_t d : shape) overflow |= __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n);
  return n;
}

TensorFileEntry parse_entry(const nlohmann::json& item, size_t i, uint64_t data_offset, uint64_t data_bytes,
                            const std::filesystem::path& path) {
  TensorFileEntry e;
  std::string dtype;
  std::string crc;
  uint64_t offset = 0;
  try {
    e.name = item.at("name").get<std::string>();
    dtype = item.at("dtype").get<std::string>();
    if (!item.at("shape").is_array()) fail(path, detail::concat("index entry ", i, " has no shape array"));
    for (const auto& d : item.at("shape")) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        fail(path, detail::concat("index entry ", i, " ('", e.name, "') has a bad shape ",
                                  item.at("shape").dump()));
      }
      e.shape.push_back(d.get<int64_t>());
    }
    offset = item.at("offset").get<uint64_t>();
    e.bytes = item.at("bytes").get<uint64_t>();
    crc = item.at("crc32c").get<std::string>();
  } catch (const nlohmann::json::exception& ex) {
    fail(path, detail::concat("index entry ", i, " is malformed (", ex.what(), ")"));
  }
  if (e.name.empty()) fail(path, detail::concat("index entry ", i, " has an empty name"));
  try {
    e.dtype = dtype_from_name(dtype);
  } catch (const InvalidArgument&) {
    fail(path, detail::concat("tensor '", e.name, "' has unknown dtype '", dtype, "'"));
  }
  bool overflow = false;
  const uint64_t expected = checked_numel_bytes(e.shape, e.dtype, overflow);
  if (overflow || expected != e.bytes) {
    fail(path, detail::concat("tensor '", e.name, "' is ", dtype, " ", shape_str(e.shape),
                              " but its entry says ", e.bytes, " bytes"));
  }
  if (offset > data_bytes || e.bytes > data_bytes - offset) {
    fail(path, detail::concat("tensor '", e.name, "' spans bytes [", offset, ", ", offset + e.bytes,
                              ") of a data section of ", data_bytes, " bytes"));
  }
  e.offset = data_offset + offset;
  bool hex_ok = crc.size() == 8;
  uint32_t value = 0;
  for (char c : crc) {
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    hex_ok &= digit >= 0;
    value = value << 4 | static_cast<uint32_t>(digit & 0xF);
  }
  if (!hex_ok) fail(path, detail::concat("tensor '", e.name, "' has a bad crc32c '", crc, "'"));
  e.crc32c = value;
  return e;
}

}  // namespace

TensorFileReader TensorFileReader::open(const std::filesystem::path& path) {
  auto state = std::make_shared<State>();
  state->file = MappedFile::open(path, "tensor file");
  const uint8_t* bytes = state->file.data();
  const uint64_t size = state->file.size();
  if (size >= sizeof(kTensorFileMagic) &&
      std::memcmp(bytes, kTensorFileMagic, sizeof(kTensorFileMagic)) != 0) {
    fail(path, "not a coat tensor file (expected the magic 'COATCKPT' in its first 8 bytes)");
  }
  if (size < kTensorFileHeaderBytes) {
    fail(path, detail::concat("truncated: ", size, " bytes, shorter than the ", kTensorFileHeaderBytes,
                              "-byte header"));
  }
  const uint32_t version = get<uint32_t>(bytes, kVersionAt);
  if (version != kTensorFileVersion) {
    fail(path, detail::concat("format version ", version, ", this build reads version ", kTensorFileVersion));
  }
  const uint64_t index_bytes = get<uint64_t>(bytes, kIndexBytesAt);
  const uint64_t data_offset = get<uint64_t>(bytes, kDataOffsetAt);
  const uint64_t data_bytes = get<uint64_t>(bytes, kDataBytesAt);
  if (data_offset % kTensorFileAlignment != 0 || index_bytes > data_offset ||
      data_offset - index_bytes < kTensorFileHeaderBytes || data_bytes > UINT64_MAX - data_offset) {
    fail(path, detail::concat("corrupted header (index of ", index_bytes, " bytes, data at byte ",
                              data_offset, ", ", data_bytes, " data bytes)"));
  }
  const uint64_t expected = data_offset + data_bytes;
  if (size != expected) {
    fail(path, detail::concat(size < expected ? "truncated: " : "", "the header says the file has ", expected,
                              " bytes (data section of ", data_bytes, " bytes at byte ", data_offset,
                              ") but it has ", size, " bytes", size < expected ? "" : " (trailing bytes)"));
  }
  const char* index_text = reinterpret_cast<const char*>(bytes + kTensorFileHeaderBytes);
  state->index_crc32c = get<uint32_t>(bytes, kIndexCrcAt);
  if (crc32c(index_text, index_bytes) != state->index_crc32c) {
    fail(path, "checksum mismatch in the index (the header is corrupted)");
  }
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(index_text, index_text + index_bytes);
  } catch (const nlohmann::json::exception& ex) {
    fail(path, detail::concat("the index is not valid JSON (", ex.what(), ")"));
  }
  if (!index.is_object() || !index.contains("tensors") || !index["tensors"].is_array()) {
    fail(path, "the index has no \"tensors\" array");
  }
  const nlohmann::json& list = index["tensors"];
  state->entries.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    TensorFileEntry e = parse_entry(list[i], i, data_offset, data_bytes, path);
    if (!state->by_name.emplace(e.name, i).second) {
      fail(path, detail::concat("tensor '", e.name, "' appears twice in the index"));
    }
    state->entries.push_back(std::move(e));
  }
  state->verified = std::make_unique<std::atomic<bool>[]>(state->entries.size());
  TensorFileReader reader;
  reader.state_ = std::move(state);
  return reader;
}

const TensorFileReader::State& TensorFileReader::state() const {
  if (!state_) throw InvalidArgument("[TensorFileReader] used before open()");
  return *state_;
}

const std::filesystem::path& TensorFileReader::path() const {
  return state().file.path();
}
uint64_t TensorFileReader::file_bytes() const {
  return state().file.size();
}
uint32_t TensorFileReader::index_crc32c() const {
  return state().index_crc32c;
}
const std::vector<TensorFileEntry>& TensorFileReader::entries() const {
  return state().entries;
}
bool TensorFileReader::contains(const std::string& name) const {
  return state().by_name.count(name) > 0;
}

size_t TensorFileReader::index_of(const std::string& name) const {
  const State& s = state();
  const auto it = s.by_name.find(name);
  if (it != s.by_name.end()) return it->second;
  std::string some;
  constexpr size_t kListed = 8;
  for (size_t i = 0; i < s.entries.size() && i < kListed; ++i) some += (i ? ", " : "") + s.entries[i].name;
  if (s.entries.size() > kListed) some += ", ...";
  throw InvalidArgument(detail::concat("tensor file ", s.file.path(), " has no tensor '", name, "' (it has ",
                                       s.entries.size(), " tensors", s.entries.empty() ? "" : ": ", some,
                                       ")"));
}

const TensorFileEntry& TensorFileReader::entry(const std::string& name) const {
  return state().entries[index_of(name)];
}

namespace {

[[noreturn]] void checksum_mismatch(const std::filesystem::path& path, const TensorFileEntry& e,
                                    uint32_t actual) {
  throw IoError(detail::concat("tensor file ", path, ": checksum mismatch in tensor '", e.name, "' (stored ",
                               crc32c_hex(e.crc32c), ", computed ", crc32c_hex(actual),
                               "): the file is corrupted"));
}

}  // namespace

void TensorFileReader::verify_entry(size_t index) const {
  if (state().verified[index].load(std::memory_order_acquire)) return;
  verify_entries({index}, /*io_threads=*/1);
}

void TensorFileReader::verify_entries(const std::vector<size_t>& indices, int io_threads) const {
  check_io_threads(io_threads, "TensorFileReader");
  const State& s = state();
  // The entries not verified yet, each once, in the order asked: the first damaged one is reported.
  std::vector<size_t> order;
  std::vector<bool> listed(s.entries.size(), false);
  for (size_t i : indices) {
    if (!listed[i] && !s.verified[i].load(std::memory_order_acquire)) order.push_back(i);
    listed[i] = true;
  }
  struct Piece {
    size_t entry;
    ByteRange range;
  };
  std::vector<Piece> pieces;
  std::vector<size_t> first_piece;
  for (size_t i : order) {
    first_piece.push_back(pieces.size());
    for (const ByteRange& r : split_bytes(s.entries[i].bytes)) pieces.push_back({i, r});
  }
  first_piece.push_back(pieces.size());
  std::vector<uint32_t> crcs(pieces.size());
  parallel_for(pieces.size(), io_threads, [&](size_t p) {
    s.file.will_need(s.entries[pieces[p].entry].offset + pieces[p].range.offset, pieces[p].range.bytes);
    crcs[p] = crc32c(s.file.data() + s.entries[pieces[p].entry].offset + pieces[p].range.offset,
                     pieces[p].range.bytes);
    s.checksummed_bytes.fetch_add(pieces[p].range.bytes, std::memory_order_relaxed);
  });
  for (size_t k = 0; k < order.size(); ++k) {
    const TensorFileEntry& e = s.entries[order[k]];
    uint32_t actual = 0;
    for (size_t p = first_piece[k]; p < first_piece[k + 1]; ++p)
      actual = crc32c_combine(actual, crcs[p], pieces[p].range.bytes);
    if (actual != e.crc32c) checksum_mismatch(s.file.path(), e, actual);
    s.verified[order[k]].store(true, std::memory_order_release);
  }
}

void TensorFileReader::verify(const std::string& name) const {
  verify_entry(index_of(name));
}

void TensorFileReader::verify_all(int io_threads) const {
  std::vector<size_t> all(state().entries.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  verify_entries(all, io_threads);
}

void TensorFileReader::mark_verified() const {
  const State& s = state();
  for (size_t i = 0; i < s.entries.size(); ++i) s.verified[i].store(true, std::memory_order_release);
}

uint64_t TensorFileReader::checksummed_bytes() const {
  return state().checksummed_bytes.load(std::memory_order_relaxed);
}

Tensor TensorFileReader::read(const std::string& name, const ContextPtr& context,
                              MemoryCategory category) const {
  const TensorFileEntry& e = entry(name);
  Tensor out = Tensor::empty(context ? context : std::make_shared<CpuContext>(), e.shape, e.dtype, category);
  read_into(name, out);
  return out;
}

void TensorFileReader::read_into(const std::string& name, Tensor& dst) const {
  const size_t index = index_of(name);
  const TensorFileEntry& e = state().entries[index];
  COAT_ARG_CHECK(dst.defined(), "read_into", "undefined destination for tensor '", name, "'");
  if (dst.shape() != e.shape) {
    throw InvalidArgument(detail::concat("checkpoint tensor '", name, "' has shape ", shape_str(e.shape),
                                         " but the model expects ", shape_str(dst.shape()), " (tensor file ",
                                         path(), ")"));
  }
  if (dst.dtype() != e.dtype) {
    throw InvalidArgument(detail::concat("checkpoint tensor '", name, "' is ", dtype_name(e.dtype),
                                         " but the model expects ", dtype_name(dst.dtype()), " (tensor file ",
                                         path(), ")"));
  }
  verify_entry(index);
  copy_bytes_into(state().file.data() + e.offset, dst);
}

Tensor TensorFileReader::read_slice(const std::string& name, int64_t element_offset, int64_t count,
                                    const ContextPtr& context, MemoryCategory category) const {
  const TensorFileEntry& e = entry(name);
  COAT_ARG_CHECK(count >= 0, "read_slice", "negative count ", count, " for tensor '", name, "' of ", path());
  Tensor out = Tensor::empty(context ? context : std::make_shared<CpuContext>(), {count}, e.dtype, category);
  read_slice_into(name, element_offset, out);
  return out;
}

size_t TensorFileReader::check_slice_read(const std::string& name, int64_t element_offset,
                                          const Tensor& dst) const {
  const size_t index = index_of(name);
  const TensorFileEntry& e = state().entries[index];
  COAT_ARG_CHECK(dst.defined(), "read_slice", "undefined destination for tensor '", name, "'");
  const int64_t count = dst.numel();
  COAT_ARG_CHECK(element_offset >= 0 && element_offset <= e.numel() && count <= e.numel() - element_offset,
                 "read_slice", "elements [", element_offset, ", ", element_offset + count, ") of tensor '",
                 name, "' are outside its ", e.numel(), " elements (tensor file ", path(), ")");
  COAT_ARG_CHECK(dst.dtype() == e.dtype, "read_slice", "tensor '", name, "' is ", dtype_name(e.dtype),
                 " but the destination is ", dtype_name(dst.dtype()), " (tensor file ", path(), ")");
  return index;
}

const uint8_t* TensorFileReader::slice_bytes(size_t index, int64_t element_offset) const {
  const TensorFileEntry& e = state().entries[index];
  return state().file.data() + e.offset + static_cast<uint64_t>(element_offset) * dtype_size(e.dtype);
}

void TensorFileReader::read_slice_into(const std::string& name, int64_t element_offset, Tensor& dst) const {
  const size_t index = check_slice_read(name, element_offset, dst);
  verify_entry(index);
  copy_bytes_into(slice_bytes(index, element_offset), dst);
}

void TensorFileReader::read_slices_into(const std::vector<TensorSliceRead>& reads, int io_threads) const {
  check_io_threads(io_threads, "TensorFileReader");
  std::vector<size_t> indices;
  indices.reserve(reads.size());
  for (const TensorSliceRead& r : reads) indices.push_back(check_slice_read(r.name, r.element_offset, r.dst));
  verify_entries(indices, io_threads);
  // Contiguous host destinations are filled by pieces on the pool; then contiguous device destinations go
  // through pinned chunk buffers (staged_upload.h: filled on the pool while this thread, which owns the
  // device, copies the other); strided destinations last, one by one.
  struct Copy {
    const uint8_t* from;
    uint8_t* to;
    ByteRange range;
  };
  std::vector<Copy> copies;
  for (size_t k = 0; k < reads.size(); ++k) {
    const Tensor& dst = reads[k].dst;
    if (!dst.device().is_cpu() || !dst.is_contiguous()) continue;
    for (const ByteRange& r : split_bytes(dst.nbytes()))
      copies.push_back(
          {slice_bytes(indices[k], reads[k].element_offset), static_cast<uint8_t*>(dst.data_ptr()), r});
  }
  const MappedFile& file = state().file;
  {
    TaskPool pool(static_cast<int>(std::clamp<size_t>(copies.size(), 1, static_cast<size_t>(io_threads))));
    for (const Copy& c : copies)
      pool.submit([c, &file] {
        file.will_need(static_cast<uint64_t>(c.from - file.data()) + c.range.offset, c.range.bytes);
        std::memcpy(c.to + c.range.offset, c.from + c.range.offset, c.range.bytes);
      });
    pool.wait();
  }
  std::vector<StagedUpload> uploads;
  for (size_t k = 0; k < reads.size(); ++k) {
    const Tensor& dst = reads[k].dst;
    if (!dst.device().is_cpu() && dst.is_contiguous())
      uploads.push_back({slice_bytes(indices[k], reads[k].element_offset), dst});
  }
  upload_staged(uploads, io_threads, [&file](const uint8_t* from, uint64_t bytes) {
    file.will_need(static_cast<uint64_t>(from - file.data()), bytes);
  });
  for (size_t k = 0; k < reads.size(); ++k) {
    Tensor dst = reads[k].dst;
    if (dst.is_contiguous()) continue;
    copy_bytes_into(slice_bytes(indices[k], reads[k].element_offset), dst);
  }
}

}  // namespace coat::io
