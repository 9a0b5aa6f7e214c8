// The COMPLETE marker as a manifest: its JSON form and the checks of files against it.
#include "coat/io/checkpoint_manifest.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "coat/core/error.h"
#include "coat/io/checksum.h"
#include "coat/io/mapped_file.h"
#include "coat/io/parallel_io.h"

namespace coat::io {
namespace {

nlohmann::json file_json(const ManifestFile& f) {
  return {{"file", f.file}, {"bytes", f.bytes}, {"crc32c", crc32c_hex(f.crc32c)}};
}

uint32_t parse_hex(const std::string& text, const std::string& what) {
  uint32_t value = 0;
  bool ok = text.size() == 8;
  for (char c : text) {
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    ok &= digit >= 0;
    value = value << 4 | static_cast<uint32_t>(digit & 0xF);
  }
  if (!ok) throw IoError(detail::concat(what, " has a bad crc32c '", text, "'"));
  return value;
}

ManifestFile parse_file(const nlohmann::json& j, const std::string& what) {
  return {j.at("file").get<std::string>(), j.at("bytes").get<uint64_t>(),
          parse_hex(j.at("crc32c").get<std::string>(), what)};
}

}  // namespace

std::string manifest_json(const CheckpointManifest& m) {
  nlohmann::json j;
  j["format_version"] = m.format_version;
  j["step"] = m.step;
  if (m.meta) j["meta"] = file_json(*m.meta);
  j["files"] = nlohmann::json::array();
  for (const ManifestFile& f : m.files) j["files"].push_back(file_json(f));
  return j.dump() + "\n";
}

CheckpointManifest read_manifest(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / kCheckpointCompleteMarker;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw IoError(detail::concat(
        "checkpoint ", dir, " is incomplete (no COMPLETE marker): the run that wrote it was interrupted"));
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw IoError(detail::concat("checkpoint ", dir, ": cannot read ", path));
  const std::string what = detail::concat("checkpoint ", dir, ": COMPLETE");
  CheckpointManifest m;
  try {
    const nlohmann::json j = nlohmann::json::parse(text.str());
    m.step = j.at("step").get<int64_t>();
    m.format_version = j.value("format_version", 1);
    if (j.contains("meta")) m.meta = parse_file(j.at("meta"), what);
    if (j.contains("files")) {
      for (const nlohmann::json& f : j.at("files")) m.files.push_back(parse_file(f, what));
    }
  } catch (const nlohmann::json::exception& e) {
    throw IoError(detail::concat(what, " is damaged (", e.what(), ")"));
  }
  return m;
}

uint32_t file_crc32c(const std::filesystem::path& path, int io_threads) {
  const MappedFile file = MappedFile::open(path, "checkpoint file");
  return parallel_crc32c(file.data(), file.size(), io_threads,
                         [&file](const ByteRange& piece) { file.will_need(piece.offset, piece.bytes); });
}

void check_file_size(const std::filesystem::path& dir, const ManifestFile& record) {
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(dir / record.file, ec);
  if (ec) throw IoError(detail::concat(record.file, " of checkpoint ", dir, ": ", ec.message()));
  if (bytes != record.bytes) {
    throw IoError(detail::concat(record.file, " of checkpoint ", dir, " has ", bytes,
                                 " bytes but COMPLETE records ", record.bytes,
                                 ": the file was cut short or replaced"));
  }
}

void check_file_checksum(const std::filesystem::path& dir, const ManifestFile& record, int io_threads) {
  check_file_size(dir, record);
  const uint32_t actual = file_crc32c(dir / record.file, io_threads);
  if (actual != record.crc32c) {
    throw IoError(detail::concat(record.file, " of checkpoint ", dir, " has CRC-32C ", crc32c_hex(actual),
                                 " but COMPLETE records ", crc32c_hex(record.crc32c),
                                 ": the file is damaged"));
  }
}

}  // namespace coat::io
