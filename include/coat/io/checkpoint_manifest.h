// A checkpoint's COMPLETE marker, written last, is also its manifest: the step, the format, and the size and
// CRC-32C of meta.json and of every rank file. So meta.json is covered by a checksum (an edited step or
// sampler position is found), a rank file cut short, swapped for another checkpoint's or flipped anywhere
// (its padding and header included) is found, and a reader needs nothing else to verify the whole directory.
//
//   {"format_version": 2, "step": 1000, "meta": {"bytes": 5120, "crc32c": "1a2b3c4d"},
//    "files": [{"file": "rank_00000.bin", "bytes": 1048576, "crc32c": "5e6f7a8b"}, ...]}
//
// Checkpoints of earlier builds have a marker without "meta" and "files": they load unverified (the tensors'
// own checksums are still checked when read).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "coat/io/parallel_io.h"

namespace coat::io {

struct ManifestFile {
  std::string file;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

struct CheckpointManifest {
  int64_t step = 0;
  int format_version = 1;
  /// meta.json's size and CRC-32C; nullopt in the marker of an earlier build.
  std::optional<ManifestFile> meta;
  std::vector<ManifestFile> files;  ///< every rank file (empty in the marker of an earlier build)
};

inline constexpr const char* kCheckpointMetaFile = "meta.json";
inline constexpr const char* kCheckpointCompleteMarker = "COMPLETE";

/// The marker's JSON text.
std::string manifest_json(const CheckpointManifest& manifest);
/// Reads `<dir>/COMPLETE`; IoError naming the checkpoint when it is missing ("incomplete") or malformed.
CheckpointManifest read_manifest(const std::filesystem::path& dir);

/// The CRC-32C of every byte of a file (through a read-only mapping), by pieces on up to io_threads threads.
uint32_t file_crc32c(const std::filesystem::path& path, int io_threads = default_io_threads());

/// Checks a file's size against the manifest's record (cheap: a stat); IoError "<file> of checkpoint <dir>
/// has N bytes but COMPLETE records M" otherwise.
void check_file_size(const std::filesystem::path& dir, const ManifestFile& record);
/// Checks a file's size and CRC-32C (file_crc32c on io_threads) against the manifest's record; IoError naming
/// the file otherwise.
void check_file_checksum(const std::filesystem::path& dir, const ManifestFile& record,
                         int io_threads = default_io_threads());

}  // namespace coat::io
