// hf_encode.py as a subprocess: posix_spawnp without a shell (no quoting of paths or prompts), stdin from and
// stdout/stderr to temporary files (no pipe to drain while waiting).
#include "coat/data/hf_python.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "coat/core/error.h"

extern char** environ;

namespace coat::data {

namespace fs = std::filesystem;

namespace {

constexpr int kModuleMissingStatus = 3;  // hf_encode.py's exit status without `tokenizers`

/// A temporary file, removed with the object.
class TempFile {
 public:
  explicit TempFile(std::string_view contents = {}) {
    std::string pattern = (fs::temp_directory_path() / "coat_hf_python_XXXXXX").string();
    fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
    if (fd_ < 0)
      throw IoError(detail::concat("cannot create a temporary file ", pattern, ": ", std::strerror(errno)));
    path_ = pattern;
    for (size_t done = 0; done < contents.size();) {
      const ssize_t n = ::write(fd_, contents.data() + done, contents.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw IoError(detail::concat("cannot write ", path_, ": ", std::strerror(errno)));
      done += static_cast<size_t>(n);
    }
    ::lseek(fd_, 0, SEEK_SET);
  }
  ~TempFile() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  int fd() const { return fd_; }
  std::string read() const {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

 private:
  int fd_ = -1;
  fs::path path_;
};

struct ProcessResult {
  int exit_status = -1;
  std::string out, err;
};

/// Runs python3 `script` `args` with `input` on stdin; a python3 that cannot start is an Error with a HINT.
ProcessResult run_python(const fs::path& script, const std::vector<std::string>& args,
                         std::string_view input) {
  if (!fs::is_regular_file(script))
    throw IoError(detail::concat("the encoder script ", script, " does not exist"));
  TempFile in(input), out, err;
  std::vector<std::string> argv_strings = {"python3", script.string()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.fd(), 0);
  posix_spawn_file_actions_adddup2(&actions, out.fd(), 1);
  posix_spawn_file_actions_adddup2(&actions, err.fd(), 2);
  pid_t pid = 0;
  const int spawned = ::posix_spawnp(&pid, "python3", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  if (spawned == 0) {
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (spawned != 0 || (WIFEXITED(status) && WEXITSTATUS(status) == 127)) {
    throw Error(
        detail::concat("cannot run python3 (", spawned != 0 ? std::strerror(spawned) : "exit status 127",
                       "): a tokenizer.json prompt is encoded by the Python library `tokenizers`. HINT: "
                       "install python3 and `pip install tokenizers`, or give the prompt as ids"));
  }
  ProcessResult r;
  r.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = out.read();
  r.err = err.read();
  return r;
}

ProcessResult run_checked(const fs::path& script, const std::vector<std::string>& args,
                          std::string_view input) {
  ProcessResult r = run_python(script, args, input);
  if (r.exit_status == kModuleMissingStatus) {
    throw Error(
        detail::concat("python3 has no module `tokenizers`, which encodes a tokenizer.json prompt. HINT: "
                       "`pip install tokenizers`, or give the prompt as ids"));
  }
  if (r.exit_status != 0) {
    throw Error(detail::concat(script, " failed (exit status ", r.exit_status, "): ", r.err));
  }
  return r;
}

}  // namespace

std::string hf_python_unavailable_reason(const fs::path& script) {
  try {
    const ProcessResult r = run_python(script, {"encode", "--tokenizer", "/nonexistent"}, "");
    if (r.exit_status == kModuleMissingStatus) return "python3 has no module `tokenizers`";
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::vector<int32_t> hf_python_encode(const fs::path& script, const fs::path& tokenizer_json,
                                      std::string_view text, bool add_special_tokens) {
  std::vector<std::string> args = {"encode", "--tokenizer", tokenizer_json.string()};
  if (!add_special_tokens) args.emplace_back("--no-special");
  const ProcessResult r = run_checked(script, args, text);
  std::vector<int32_t> ids;
  std::stringstream ss(r.out);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.find_first_not_of(" \n") == std::string::npos) continue;
    try {
      ids.push_back(static_cast<int32_t>(std::stol(item)));
    } catch (const std::exception&) {
      throw Error(detail::concat(script, " printed '", r.out, "', not comma-separated ids"));
    }
  }
  return ids;
}

std::vector<std::vector<int32_t>> hf_python_encode_many(const fs::path& script, const fs::path& tokenizer_json,
                                                        const std::vector<std::string>& texts,
                                                        bool add_special_tokens) {
  std::vector<std::string> args = {"encode", "--json", "--tokenizer", tokenizer_json.string()};
  if (!add_special_tokens) args.emplace_back("--no-special");
  const ProcessResult r = run_checked(script, args, nlohmann::json(texts).dump());
  try {
    return nlohmann::json::parse(r.out).get<std::vector<std::vector<int32_t>>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(
        detail::concat(script, " printed no JSON list of id lists (", e.what(), "): ", r.out.substr(0, 200)));
  }
}

std::vector<std::string> hf_python_decode(const fs::path& script, const fs::path& tokenizer_json,
                                          const std::vector<std::vector<int32_t>>& sequences,
                                          bool skip_special_tokens) {
  std::string input;
  for (const std::vector<int32_t>& ids : sequences) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) input += ',';
      input += std::to_string(ids[i]);
    }
    input += '\n';
  }
  std::vector<std::string> args = {"decode", "--tokenizer", tokenizer_json.string()};
  if (!skip_special_tokens) args.emplace_back("--keep-special");
  const ProcessResult r = run_checked(script, args, input);
  try {
    return nlohmann::json::parse(r.out).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(
        detail::concat(script, " printed no JSON list of strings (", e.what(), "): ", r.out.substr(0, 200)));
  }
}

}  // namespace coat::data
