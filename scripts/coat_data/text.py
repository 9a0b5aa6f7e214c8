"""The `text` command: plain text or JSONL documents -> one token file, each document as
[BOS] tokens EOS (BOS when the tokenizer adds one or --add-bos says so)."""
from dataclasses import dataclass

from . import inputs, parallel
from .errors import DataError
from .hf_tokenizer import HfTokenizer, TokenizerSpec
from .token_files import TokenFileWriter, pack_tokens


@dataclass(frozen=True)
class TextOptions:
    mode: str = "file"             # "file" (a document per file), "lines" (per line), "jsonl"
    field: str = "text"            # the JSONL field that holds a document
    encoding_errors: str = "strict"


def _setup(arg):
    spec, options = arg
    return HfTokenizer(spec), options


def _document_text(options, entry):
    """The text of an entry; None for an empty document."""
    source, line, payload, _ = entry
    if isinstance(payload, str):
        return payload
    text = inputs.decode_line(source, line, payload, options.encoding_errors)
    if options.mode == "jsonl":
        record = inputs.parse_json_line(source, line, text)
        if options.field not in record:
            raise DataError(f"{source}:{line}: no field {options.field!r} (keys: {', '.join(sorted(record))}); "
                            "choose it with --field")
        text = record[options.field]
        if not isinstance(text, str):
            raise DataError(f"{source}:{line}: field {options.field!r} is a {type(text).__name__}, not a string")
    return text if text.strip() else None


def _encode_chunk(state, chunk):
    """(token bytes, documents, tokens, empty documents skipped, input bytes) of a chunk."""
    tokenizer, options = state
    entries, nbytes = chunk
    texts, flags = [], []
    for entry in entries:
        text = _document_text(options, entry)
        if text is not None:
            texts.append(text)
            flags.append(entry[3])
    ids = []
    for flag, piece in zip(flags, tokenizer.encode_batch(texts)):
        if flag & inputs.START:
            ids.extend(tokenizer.bos_ids)
        ids.extend(piece)
        if flag & inputs.END:
            ids.append(tokenizer.eos_id)
    documents = sum(1 for flag in flags if flag & inputs.END)
    return pack_tokens(ids, tokenizer.width), documents, len(ids), len(entries) - len(texts), nbytes


def run(spec, options, paths, output, workers, chunk_bytes, piece_chars, quiet):
    """Writes the token file; returns the summary line."""
    tokenizer = HfTokenizer(spec)
    if not quiet:
        print(f"tokenizer {tokenizer.describe()}")
    if options.mode == "file" and piece_chars and not tokenizer.splits_after_newline():
        piece_chars = 0  # this tokenizer encodes pieces differently from the whole: read each file whole
    chunks = inputs.read_chunks(paths, options.mode, chunk_bytes, piece_chars, options.encoding_errors)
    progress = parallel.Progress(inputs.total_bytes(paths), quiet)
    documents = skipped = 0
    try:
        with TokenFileWriter(output, tokenizer.width, tokenizer.vocab_size) as writer:
            for data, docs, tokens, empty, nbytes in parallel.ordered_map(
                    _setup, (spec, options), _encode_chunk, chunks, workers):
                writer.append_bytes(data)
                documents += docs
                skipped += empty
                progress.update(nbytes, docs, tokens)
            if documents == 0:
                raise DataError(f"no documents in {', '.join(paths)} (every input is empty)")
            writer.commit()
    finally:
        progress.close()
    seconds = progress.seconds()
    return (f"wrote {output}: {documents} documents, {writer.count} tokens (u{8 * tokenizer.width}, vocabulary "
            f"{tokenizer.vocab_size}) in {seconds:.1f} s, {writer.count / max(seconds, 1e-9):.0f} tokens/s"
            + (f"; {skipped} empty documents skipped" if skipped else ""))
