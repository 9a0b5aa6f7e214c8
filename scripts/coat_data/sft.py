"""The `sft` command: instruction / chat JSONL -> a token file and its loss mask (notes: loss_mask_format.md).

An example is {"prompt": P, "completion": C} or {"messages": [{"role", "content"}, ...]}.
  prompt/completion: [BOS] P C EOS, encoded as one text; mask 1 on the tokens that hold text of C, and on EOS.
                     With --chat the pair is a user turn and an assistant turn of the chat template instead.
  messages:          the conversation rendered by the chat template (BOS, end-of-turn tokens and all come from
                     the template, as in transformers' apply_chat_template); mask 1 on the tokens that hold text
                     of an assistant turn (ChatTemplate.assistant_spans), its end-of-turn token included.
The first token of every example has mask 0 (nothing before it predicts it). With --seq-len L the examples
are packed greedily into rows of exactly L tokens (Packer).
"""
from dataclasses import dataclass

from . import inputs, parallel
from .chat_template import ChatTemplate
from .errors import DataError, at
from .hf_tokenizer import HfTokenizer
from .token_files import MaskFileWriter, TokenFileWriter


@dataclass(frozen=True)
class SftOptions:
    chat: bool = False             # --chat: render prompt/completion pairs with the chat template
    encoding_errors: str = "strict"


class _WorkerState:
    def __init__(self, spec, options):
        self.tokenizer = HfTokenizer(spec)
        self.options = options
        self._template = None

    def template(self):
        if self._template is None:
            self._template = ChatTemplate(self.tokenizer.chat_template_source(), self.tokenizer.template_variables())
        return self._template


def _setup(arg):
    return _WorkerState(*arg)


def _string(record, key):
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{key!r} is a {type(value).__name__}, not a string")
    return value


def _messages(record):
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise DataError(f"message {i} must be an object with string 'role' and 'content'")
        if message["role"] == "assistant" and not message["content"].strip():
            raise DataError(f"message {i}: empty completion (an assistant message without content)")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("no assistant message (nothing to train on)")
    return messages


def mask_from_spans(offsets, spans):
    """1 for each token whose characters overlap one of the sorted, disjoint [start, end) spans: a token that
    straddles the start of a completion (prompt "Answer: " + completion "yes" gives the token " yes") holds
    completion text and is trained. A token of no characters counts as its position's character."""
    mask = bytearray(len(offsets))
    span = 0
    for i, (start, end) in enumerate(offsets):
        end = max(end, start + 1)
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        if span < len(spans) and spans[span][0] < end:
            mask[i] = 1
    return mask


def encode_example(state, record):
    """(ids, mask) of one example."""
    tokenizer = state.tokenizer
    if "messages" in record:
        text, spans = state.template().assistant_spans(_messages(record))
        prefix, suffix = [], []
    elif "prompt" in record and "completion" in record:
        prompt, completion = _string(record, "prompt"), _string(record, "completion")
        if not completion.strip():
            raise DataError("empty completion")
        if state.options.chat:
            text, spans = state.template().assistant_spans(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])
            prefix, suffix = [], []
        else:
            text, spans = prompt + completion, [(len(prompt), len(prompt) + len(completion))]
            prefix, suffix = tokenizer.bos_ids, [tokenizer.eos_id]
    else:
        raise DataError(f"expected the keys 'prompt' and 'completion', or 'messages'; got {sorted(record)}")
    [(ids, offsets)] = tokenizer.encode_batch_with_offsets([text])
    mask = bytearray(len(prefix)) + mask_from_spans(offsets, spans) + bytearray([1] * len(suffix))
    ids = list(prefix) + ids + suffix
    mask[0] = 0
    if not any(mask):
        raise DataError("no completion token")
    return ids, mask


def _encode_chunk(state, chunk):
    entries, nbytes = chunk
    examples = []
    for source, line, raw, _ in entries:
        record = inputs.parse_json_line(source, line,
                                        inputs.decode_line(source, line, raw, state.options.encoding_errors))
        try:
            examples.append(encode_example(state, record))
        except DataError as e:
            raise at(source, line, str(e)) from e
    return examples, nbytes


class Packer:
    """Greedy packing into rows of exactly seq_len tokens: an example goes into the current row when it fits,
    else the row is padded (pad id, mask 0) and the example starts the next one. An example longer than
    seq_len is truncated to seq_len tokens (or dropped with drop_long); one with no completion token left is
    dropped. Every row starts with the first token of an example, whose mask is 0."""

    def __init__(self, seq_len, pad_id, drop_long):
        self.seq_len, self.pad_id, self.drop_long = seq_len, pad_id, drop_long
        self.ids, self.mask = [], bytearray()
        self.rows = self.padding = self.truncated = self.dropped_long = self.dropped_no_completion = 0

    def add(self, ids, mask):
        """The rows completed by adding this example (a list of (ids, mask))."""
        if len(ids) > self.seq_len:
            if self.drop_long:
                self.dropped_long += 1
                return []
            ids, mask = ids[:self.seq_len], mask[:self.seq_len]
            if not any(mask):
                self.dropped_no_completion += 1
                return []
            self.truncated += 1
        rows = []
        if len(self.ids) + len(ids) > self.seq_len:
            rows.append(self._close_row())
        self.ids.extend(ids)
        self.mask.extend(mask)
        return rows

    def _close_row(self):
        pad = self.seq_len - len(self.ids)
        row = (self.ids + [self.pad_id] * pad, self.mask + bytearray(pad))
        self.padding += pad
        self.rows += 1
        self.ids, self.mask = [], bytearray()
        return row

    def finish(self):
        return [self._close_row()] if self.ids else []

    def summary(self):
        total = max(self.rows * self.seq_len, 1)
        parts = [f"{self.rows} rows of {self.seq_len}", f"{100 * self.padding / total:.1f}% padding"]
        if self.truncated:
            parts.append(f"{self.truncated} example(s) longer than {self.seq_len} truncated")
        if self.dropped_long:
            parts.append(f"{self.dropped_long} example(s) longer than {self.seq_len} dropped (--drop-long)")
        if self.dropped_no_completion:
            parts.append(f"{self.dropped_no_completion} example(s) dropped: no completion token within "
                         f"{self.seq_len} tokens")
        return ", ".join(parts)


def run(spec, options, paths, output, workers, chunk_bytes, seq_len, drop_long, quiet):
    """Writes <output> and <output>.mask; returns the summary line."""
    tokenizer = HfTokenizer(spec)
    if not quiet:
        print(f"tokenizer {tokenizer.describe()}")
    chunks = inputs.read_chunks(paths, "jsonl", chunk_bytes, errors=options.encoding_errors)
    progress = parallel.Progress(inputs.total_bytes(paths), quiet, unit_name="examples")
    packer = Packer(seq_len, tokenizer.pad_id, drop_long) if seq_len else None
    examples = targets = 0
    try:
        with TokenFileWriter(output, tokenizer.width, tokenizer.vocab_size) as writer, \
                MaskFileWriter(output + ".mask") as mask_writer:
            def write(ids, mask):
                writer.append(ids)
                mask_writer.append(mask)

            for encoded, nbytes in parallel.ordered_map(_setup, (spec, options), _encode_chunk, chunks, workers):
                tokens = 0
                for ids, mask in encoded:
                    tokens += len(ids)
                    for row in packer.add(ids, mask) if packer else [(ids, mask)]:
                        targets += row[1].count(1)
                        write(*row)
                examples += len(encoded)
                progress.update(nbytes, len(encoded), tokens)
            for row in packer.finish() if packer else []:
                targets += row[1].count(1)
                write(*row)
            if writer.count == 0:
                raise DataError(f"no examples in {', '.join(paths)}"
                                + (" (every one was dropped)" if examples else ""))
            writer.finish()
            mask_writer.finish()
            mask_writer.rename()
            writer.rename()
    finally:
        progress.close()
    seconds = progress.seconds()
    packing = f"; {packer.summary()}" if packer else ""
    return (f"wrote {output} and {output}.mask: {examples} examples, {writer.count} tokens (u{8 * tokenizer.width}), "
            f"{targets} loss targets, in {seconds:.1f} s, {writer.count / max(seconds, 1e-9):.0f} tokens/s{packing}")
