// coat-tokenize: trains SentencePiece BPE tokenizers and converts text to and from coat token files.
//   coat-tokenize train  --input a.txt [--input b.txt ...] --model-prefix out/tok --vocab-size 4096
//                        [--character-coverage 1.0] [--max-sentence-length N] [--input-sentence-size N]
//                        [--threads N] [--verbose]
//   coat-tokenize encode --model tok.model --input a.txt [--input b.txt ...] --output tokens.bin
//                        [--append-eos] [--bos]
//   coat-tokenize decode --model tok.model --tokens tokens.bin [--start S] [--count N] [--raw u16|u32]
//   coat-tokenize info   --tokens tokens.bin [--raw u16|u32] [--vocab-size V] [--model tok.model] [--check]
//
// encode streams its inputs: a document is a run of non-blank lines (blank lines and the end of a file
// separate documents), encoded as one string with its line breaks; --bos puts <s> before each document,
// --append-eos puts </s> after it. Documents over 1 MiB are encoded in pieces of whole lines (each piece
// after the first is encoded from its line break on, and the dummy-prefix "▁" this gives is dropped, so the
// ids match those of the whole document wherever no piece spans a line break, as with byte-fallback
// models). The output is a coat token file (u16 when the vocabulary fits, else u32), written atomically.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "coat/core/error.h"
#include "coat/data/token_file.h"
#include "coat/data/tokenizer.h"

namespace {

using coat::data::TokenFile;
using coat::data::Tokenizer;
using coat::data::TokenWidth;

constexpr size_t kMaxChunkBytes = 1 << 20;
constexpr size_t kMaxDecodeTokens = 1 << 20;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string::npos;
}

// ---- train ----

struct TrainArgs {
  std::vector<std::string> inputs;
  std::string model_prefix;
  int32_t vocab_size = 4096;
  coat::data::BpeTrainOptions options;
};

int run_train(const TrainArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::filesystem::path> inputs(a.inputs.begin(), a.inputs.end());
  const auto result = coat::data::train_bpe(inputs, a.model_prefix, a.vocab_size, a.options);
  std::printf("trained a BPE tokenizer of %d pieces in %.1f s: %s, %s\n", result.vocab_size,
              seconds_since(start), result.model_file.c_str(), result.vocab_file.c_str());
  return 0;
}

// ---- encode ----

struct EncodeArgs {
  std::string model, output;
  std::vector<std::string> inputs;
  bool append_eos = false, bos = false;
};

int run_encode(const EncodeArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  const Tokenizer tok = Tokenizer::load(a.model);
  if (a.append_eos && tok.eos_id() < 0) {
    throw coat::InvalidArgument("--append-eos: the model has no </s> token");
  }
  if (a.bos && tok.bos_id() < 0) {
    throw coat::InvalidArgument("--bos: the model has no <s> token");
  }
  const auto vocab = static_cast<uint32_t>(tok.vocab_size());
  const TokenWidth width = coat::data::token_width_for_vocab(vocab);
  coat::data::TokenFileWriter writer(a.output, width, vocab);

  uint64_t bytes = 0, documents = 0;
  std::string text;  // the current document's lines not yet encoded
  bool in_document = false, continuation = false;
  std::vector<int32_t> ids;
  // SentencePiece puts a "▁" before the text it encodes (add_dummy_prefix); a continuation starts with
  // "\n", so that space comes out as a piece of its own, which is dropped.
  const int32_t space_id = tok.piece_to_id("\u2581");
  const bool has_space_piece = space_id != tok.unk_id() && tok.piece(space_id) == "\u2581";
  auto encode_pending = [&] {
    if (text.empty()) return;
    ids = tok.encode(text);
    std::span<const int32_t> span(ids);
    if (continuation && has_space_piece && !span.empty() && span.front() == space_id) span = span.subspan(1);
    writer.append(span);
    text.clear();
    continuation = false;
  };
  auto end_document = [&] {
    if (!in_document) return;
    encode_pending();
    if (a.append_eos) {
      const int32_t eos = tok.eos_id();
      writer.append(std::span<const int32_t>(&eos, 1));
    }
    ++documents;
    in_document = false;
  };

  for (const auto& input : a.inputs) {
    std::ifstream in(input, std::ios::binary);
    if (!in) {
      throw coat::IoError(
          coat::detail::concat("input ", input, ": cannot open (", std::strerror(errno), ")"));
    }
    std::string line;
    while (std::getline(in, line)) {
      bytes += line.size() + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (is_blank(line)) {
        end_document();
        continue;
      }
      if (!in_document) {
        in_document = true;
        if (a.bos) {
          const int32_t bos = tok.bos_id();
          writer.append(std::span<const int32_t>(&bos, 1));
        }
      } else if (text.size() >= kMaxChunkBytes) {
        // A long document: encode what we have and go on from this line's break.
        encode_pending();
        continuation = true;
        text += '\n';
      } else {
        text += '\n';
      }
      text += line;
    }
    if (in.bad()) throw coat::IoError(coat::detail::concat("input ", input, ": read failed"));
    end_document();
  }
  const uint64_t count = writer.count();
  writer.commit();
  std::printf(
      "%s: %llu tokens (%s, vocab %u) from %llu documents, %llu bytes of text: %.3f bytes/token; %.1f s\n",
      a.output.c_str(), static_cast<unsigned long long>(count), width == TokenWidth::U16 ? "u16" : "u32",
      vocab, static_cast<unsigned long long>(documents), static_cast<unsigned long long>(bytes),
      count > 0 ? static_cast<double>(bytes) / static_cast<double>(count) : 0.0, seconds_since(start));
  return 0;
}

// ---- decode / info ----

TokenFile open_tokens(const std::string& path, const std::string& raw, uint32_t vocab_size) {
  if (raw.empty()) return TokenFile::open(path);
  return TokenFile::open_raw(path, coat::data::parse_token_width(raw), vocab_size);
}

struct DecodeArgs {
  std::string model, tokens, raw;
  uint64_t start = 0;
  std::optional<uint64_t> count;
};

int run_decode(const DecodeArgs& a) {
  const Tokenizer tok = Tokenizer::load(a.model);
  const auto vocab = static_cast<uint32_t>(tok.vocab_size());
  const TokenFile f = open_tokens(a.tokens, a.raw, vocab);
  if (f.vocab_size() > vocab) {
    throw coat::InvalidArgument(coat::detail::concat(a.tokens, " was made with a vocabulary of ",
                                                     f.vocab_size(), " tokens, the model ", a.model, " has ",
                                                     vocab));
  }
  if (a.start > f.size()) {
    throw coat::InvalidArgument(
        coat::detail::concat("--start ", a.start, " is past the end (", f.size(), " tokens)"));
  }
  const uint64_t end = a.count ? std::min(f.size(), a.start + *a.count) : f.size();
  // Documents end at </s>; they print separated by a blank line, as encode reads them.
  std::vector<int32_t> doc;
  bool separator = false;
  auto flush = [&](bool document_end) {
    if (separator) std::fputs("\n", stdout);
    separator = false;
    const std::string text = tok.decode(doc);
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (document_end) {
      std::fputs("\n", stdout);
      separator = true;
    }
    doc.clear();
  };
  std::vector<int32_t> block(1 << 16);
  for (uint64_t pos = a.start; pos < end; pos += block.size()) {
    const uint64_t n = std::min<uint64_t>(block.size(), end - pos);
    f.read(pos, std::span<int32_t>(block.data(), n), vocab);
    for (uint64_t i = 0; i < n; ++i) {
      if (block[i] == tok.eos_id()) {
        flush(true);
      } else {
        doc.push_back(block[i]);
        if (doc.size() >= kMaxDecodeTokens) flush(false);
      }
    }
  }
  if (!doc.empty()) {
    flush(false);
    std::fputs("\n", stdout);
  }
  return 0;
}

struct InfoArgs {
  std::string tokens, raw, model;
  uint32_t vocab_size = 0;
  bool check = false;
};

int run_info(const InfoArgs& a) {
  uint32_t vocab = a.vocab_size;
  if (!a.model.empty()) vocab = static_cast<uint32_t>(Tokenizer::load(a.model).vocab_size());
  const TokenFile f = open_tokens(a.tokens, a.raw, vocab);
  const uint64_t file_bytes = std::filesystem::file_size(a.tokens);
  std::printf("file:       %s\n", a.tokens.c_str());
  std::printf("format:     %s\n", a.raw.empty() ? "coat token file, version 1" : "headerless array");
  std::printf("width:      %s (%d bytes)\n", f.width() == TokenWidth::U16 ? "u16" : "u32",
              static_cast<int>(f.width()));
  std::printf("vocab_size: %u%s\n", f.vocab_size(), f.vocab_size() == 0 ? " (unknown)" : "");
  std::printf("tokens:     %llu\n", static_cast<unsigned long long>(f.size()));
  std::printf("bytes:      %llu\n", static_cast<unsigned long long>(file_bytes));
  if (vocab > 0 && f.vocab_size() > vocab) {
    throw coat::InvalidArgument(coat::detail::concat(a.tokens, " records a vocabulary of ", f.vocab_size(),
                                                     " tokens, more than the ", vocab, " given"));
  }
  if (a.check) {
    const uint32_t limit = vocab > 0 ? vocab : f.vocab_size();
    const auto start = std::chrono::steady_clock::now();
    f.validate(limit);
    std::printf("check:      every token is < %u (%.2f s)\n", limit, seconds_since(start));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coat-tokenize: train SentencePiece BPE tokenizers and convert text to coat token files"};
  app.require_subcommand(1);

  TrainArgs train;
  CLI::App* train_cmd =
      app.add_subcommand("train", "train a BPE tokenizer (Llama-2 settings, byte fallback)");
  train_cmd->add_option("--input", train.inputs, "UTF-8 text file (repeatable); one sentence per line")
      ->required()
      ->check(CLI::ExistingFile);
  train_cmd->add_option("--model-prefix", train.model_prefix, "writes PREFIX.model and PREFIX.vocab")
      ->required();
  train_cmd->add_option("--vocab-size", train.vocab_size, "pieces, including 3 special and 256 byte pieces")
      ->capture_default_str()
      ->check(CLI::Range(260, 1 << 20));
  train_cmd
      ->add_option("--character-coverage", train.options.character_coverage,
                   "fraction of characters with their own piece (rest: byte pieces)")
      ->capture_default_str()
      ->check(CLI::Range(0.98, 1.0));
  train_cmd
      ->add_option("--max-sentence-length", train.options.max_sentence_length,
                   "lines longer than this many bytes are skipped")
      ->capture_default_str();
  train_cmd
      ->add_option("--input-sentence-size", train.options.input_sentence_size,
                   "train on this many sampled lines (0: all)")
      ->capture_default_str();
  train_cmd
      ->add_option("--threads", train.options.num_threads, "threads (the result does not depend on them)")
      ->capture_default_str()
      ->check(CLI::Range(1, 128));
  train_cmd->add_flag("--verbose", train.options.verbose, "SentencePiece's progress log");

  EncodeArgs encode;
  CLI::App* encode_cmd = app.add_subcommand("encode", "encode text files into one coat token file");
  encode_cmd->add_option("--model", encode.model, "SentencePiece .model")->required();
  encode_cmd->add_option("--input", encode.inputs, "text file (repeatable)")
      ->required()
      ->check(CLI::ExistingFile);
  encode_cmd->add_option("--output", encode.output, "token file to write")->required();
  encode_cmd->add_flag("--append-eos", encode.append_eos, "end each document with </s>");
  encode_cmd->add_flag("--bos", encode.bos, "start each document with <s>");

  DecodeArgs decode;
  uint64_t decode_count = 0;
  CLI::App* decode_cmd = app.add_subcommand("decode", "print the text of a token file");
  decode_cmd->add_option("--model", decode.model, "SentencePiece .model")->required();
  decode_cmd->add_option("--tokens", decode.tokens, "token file")->required();
  decode_cmd->add_option("--start", decode.start, "first token");
  CLI::Option* count_opt = decode_cmd->add_option("--count", decode_count, "tokens to decode (default: all)");
  decode_cmd->add_option("--raw", decode.raw, "headerless array of this dtype")
      ->check(CLI::IsMember({"u16", "u32"}));

  InfoArgs info;
  CLI::App* info_cmd = app.add_subcommand("info", "describe a token file");
  info_cmd->add_option("--tokens", info.tokens, "token file")->required();
  info_cmd->add_option("--raw", info.raw, "headerless array of this dtype")
      ->check(CLI::IsMember({"u16", "u32"}));
  info_cmd->add_option("--vocab-size", info.vocab_size, "vocabulary size (for --check on a raw array)");
  info_cmd->add_option("--model", info.model, "take the vocabulary size from this SentencePiece model");
  info_cmd->add_flag("--check", info.check, "scan for tokens outside the vocabulary");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*train_cmd) return run_train(train);
    if (*encode_cmd) return run_encode(encode);
    if (*decode_cmd) {
      if (*count_opt) decode.count = decode_count;
      return run_decode(decode);
    }
    if (*info_cmd) return run_info(info);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "coat-tokenize: error: %s\n", e.what());
    return 1;
  }
  return 1;
}
