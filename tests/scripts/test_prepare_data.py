"""Tests of scripts/prepare_data.py against the tokenizers library's own encoding, with a small byte-level BPE
tokenizer trained here (special tokens <s> </s> <pad> and chat roles, a post-processor that adds <s> and trims
offsets, a chat template in tokenizer_config.json). The token and mask files are parsed here, independently.

  python3 tests/scripts/test_prepare_data.py     exit status 77 (ctest: skipped) without tokenizers or jinja2
"""
import contextlib
import gzip
import io
import itertools
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "prepare_data.py")
sys.path.insert(0, os.path.join(REPO, "scripts"))

WORDS = ("the", "answer", "is", "four", "Paris", "capital", "of", "France", "hello", "world", "two", "plus",
         "caf\u00e9", "na\u00efve", "\u00fcber", "42", "1999", "what", "why", "model", "token", "data", ",", ".", "?")
SPECIAL = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
# OLMo-2's template in shape: the last assistant turn has no line break after EOS, earlier ones do.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{% if not loop.last %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}")


def sentences(count, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(count)]


def make_tokenizer(directory, added_tokens=0):
    """Trains a byte-level BPE tokenizer, saves tokenizer.json + tokenizer_config.json; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    code = "def f(x):\n    return x\n\n\nclass A:\n    pass\n"  # gives merges of line breaks with indentation
    tok.train_from_iterator(sentences(300, seed=1) + ["Hello world.\nWhat is two plus two?\n"] + [code] * 20, trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])])
    if added_tokens:
        tok.add_tokens([f"<extra_{i}>" for i in range(added_tokens)])
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": {"content": "</s>", "__type": "AddedToken"}, "pad_token": "<pad>",
              "chat_template": CHAT_TEMPLATE}
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return tok


def read_token_file(path):
    """(width, vocab_size, tokens) of a coat token file."""
    with open(path, "rb") as f:
        data = f.read()
    magic, version, width, vocab_size, reserved, count = struct.unpack_from("<8sIIIIQ", data)
    assert (magic, version, reserved) == (b"COATTOK\0", 1, 0), (magic, version, reserved)
    assert len(data) == 32 + count * width, (len(data), count, width)
    tokens = list(struct.unpack_from(f"<{count}{'H' if width == 2 else 'I'}", data, 32))
    return width, vocab_size, tokens


def read_mask_file(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, version, reserved, count = struct.unpack_from("<8sIIQ", data)
    assert (magic, version, reserved) == (b"COATMSK\0", 1, 0), (magic, version, reserved)
    assert len(data) == 24 + count, (len(data), count)
    return list(data[24:])


class PrepareDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.dir = cls._tmp.name
        cls.tok_dir = os.path.join(cls.dir, "tok")
        cls.tok = make_tokenizer(cls.tok_dir)
        cls.bos, cls.eos, cls.pad = (cls.tok.token_to_id(t) for t in ("<s>", "</s>", "<pad>"))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        with open(self.path(name), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return self.path(name)

    def run_script(self, *args, ok=True, subprocess_run=False):
        """Runs prepare_data.py with --quiet (and --workers 1 unless given): in this process, or as a program."""
        args = list(args) + ["--quiet"] + ([] if "--workers" in args or subprocess_run else ["--workers", "1"])
        if subprocess_run:
            result = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)
        else:
            import prepare_data
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                status = prepare_data.main(args)
            result = subprocess.CompletedProcess(args, status, stdout.getvalue(), stderr.getvalue())
        if ok:
            self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def plain(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids


class TextTest(PrepareDataTest):
    def test_header_and_tokens_are_the_tokenizers_encoding_of_each_document_then_eos(self):
        docs = ["Hello world.\nWhat is two plus two?\n", "caf\u00e9 \u00fcber  na\u00efve\r\n\ttabs", "42"]
        paths = [self.write(f"doc{i}.txt", d) for i, d in enumerate(docs)] + [self.write("empty.txt", "")]
        out = self.path("docs.bin")
        self.run_script("text", "--tokenizer", self.tok_dir, "--output", out, *paths, subprocess_run=True)
        width, vocab, tokens = read_token_file(out)
        self.assertEqual((width, vocab), (2, self.tok.get_vocab_size()))
        expected = [t for d in docs for t in self.tok.encode(d).ids + [self.eos]]  # encode() adds <s>
        self.assertEqual(tokens[0], self.bos)
        self.assertEqual(tokens, expected)
        self.assertFalse(os.path.exists(out + ".tmp"))

    def test_workers_and_formats_give_the_same_tokens(self):
        docs = sentences(3000, seed=2)
        lines = self.write("lines.txt", "\n".join(docs[:1500]) + "\n\n  \n" + "\n".join(docs[1500:]) + "\n")
        jsonl = self.write("docs.jsonl", "".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
        with open(jsonl, "rb") as f, gzip.open(jsonl + ".gz", "wb") as z:
            z.write(f.read())
        outputs = {}
        for name, args in (("lines1", ("--lines", "--workers", "1", lines)),
                           ("lines3", ("--lines", "--workers", "3", "--chunk-bytes", "500", lines)),
                           ("jsonl3", ("--jsonl", "--field", "body", "--workers", "3", "--chunk-bytes", "700", jsonl)),
                           ("jsonl_gz", ("--jsonl", "--field", "body", jsonl + ".gz"))):
            outputs[name] = self.path(name + ".bin")
            self.run_script("text", "--tokenizer", self.tok_dir, "--output", outputs[name], *args)
        with open(outputs["lines1"], "rb") as f:
            reference = f.read()
        for name in ("lines3", "jsonl3", "jsonl_gz"):
            with open(outputs[name], "rb") as f:
                self.assertEqual(f.read(), reference, name)
        _, _, tokens = read_token_file(outputs["lines1"])
        self.assertEqual(tokens, [t for d in docs for t in self.tok.encode(d).ids + [self.eos]])

    def test_long_document_is_encoded_in_pieces_exactly(self):
        from coat_data import inputs
        # Cut only after a line break between non-spaces: not "\n    return" (the vocabulary merges "\n   ").
        doc = "".join(s + ".\n" for s in sentences(200, seed=3)) + "def f(x):\n    return x"
        self.assertNotEqual(self.plain("x\n    return"), self.plain("x\n") + self.plain("    return"))
        path = self.write("long.txt", doc)
        pieces = [e for entries, _ in inputs.read_chunks([path], "file", 1 << 20, piece_chars=64) for e in entries]
        self.assertGreater(len(pieces), 1)
        self.assertEqual("".join(p[2] for p in pieces), doc)
        self.assertEqual([p[3] for p in (pieces[0], pieces[-1])], [inputs.START, inputs.END])
        out = self.path("long.bin")
        self.run_script("text", "--tokenizer", self.tok_dir, "--output", out, "--piece-chars", "64", path)
        self.assertEqual(read_token_file(out)[2], self.tok.encode(doc).ids + [self.eos])

    def test_a_vocabulary_past_65536_gives_u32_tokens(self):
        from coat_data.hf_tokenizer import token_width_for_vocab
        self.assertEqual([token_width_for_vocab(v) for v in (256, 65536, 65537, 128256)], [2, 2, 4, 4])
        big_dir = os.path.join(self.dir, "big_tok")
        big = make_tokenizer(big_dir, added_tokens=65536)
        doc = "hello <extra_65535> world <extra_3>"
        out = self.path("big.bin")
        self.run_script("text", "--tokenizer", os.path.join(big_dir, "tokenizer.json"), "--output", out,
                        "--workers", "1", self.write("big.txt", doc))
        width, vocab, tokens = read_token_file(out)
        self.assertEqual((width, vocab), (4, big.get_vocab_size()))
        self.assertGreater(vocab, 65536)
        self.assertEqual(tokens, big.encode(doc).ids + [big.token_to_id("</s>")])
        self.assertIn(big.token_to_id("<extra_65535>"), tokens)

    def test_bos_and_eos_overrides(self):
        path = self.write("short.txt", "hello world")
        out = self.path("override.bin")
        self.run_script("text", "--tokenizer", self.tok_dir, "--output", out, "--no-bos", "--eos", "<pad>", path)
        self.assertEqual(read_token_file(out)[2], self.plain("hello world") + [self.pad])

    def test_bad_input_leaves_no_output_and_names_file_and_line(self):
        good = self.write("good.jsonl", "".join(json.dumps({"text": s}) + "\n" for s in sentences(50, seed=4)))
        bad = self.write("bad.jsonl", '{"text": "fine"}\n{"text": "fine too"}\n{"text": broken\n')
        missing = self.write("missing.jsonl", '{"text": "fine"}\n{"body": "no text"}\n')
        with open(self.path("latin1.jsonl"), "wb") as f:
            f.write(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
        out = self.path("failed.bin")
        for path, where, what in ((bad, "bad.jsonl:3", "bad JSON"), (missing, "missing.jsonl:2", "no field 'text'"),
                                  (self.path("latin1.jsonl"), "latin1.jsonl:2", "not UTF-8")):
            for workers in ("1", "2"):
                result = self.run_script("text", "--tokenizer", self.tok_dir, "--output", out, "--jsonl",
                                         "--workers", workers, "--chunk-bytes", "100", good, path, ok=False)
                self.assertEqual(result.returncode, 1)
                self.assertIn(where, result.stderr)
                self.assertIn(what, result.stderr)
                self.assertFalse(os.path.exists(out))
                self.assertFalse(os.path.exists(out + ".tmp"))
        # A failed run leaves an earlier file under the name as it was.
        with open(out, "wb") as f:
            f.write(b"previous")
        self.run_script("text", "--tokenizer", self.tok_dir, "--output", out, "--jsonl", good, bad, ok=False)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"previous")


class StreamingTest(PrepareDataTest):
    def test_chunks_are_read_only_a_bounded_way_ahead_of_the_writer(self):
        from coat_data import inputs, parallel, text
        from coat_data.hf_tokenizer import TokenizerSpec
        path = self.write("many.txt", "\n".join(sentences(20000, seed=5)) + "\n")
        pulled = [0]

        def counted():
            for chunk in inputs.read_chunks([path], "lines", 2000):
                pulled[0] += 1
                yield chunk

        arg = (TokenizerSpec(path=self.tok_dir), text.TextOptions(mode="lines"))
        workers, consumed, documents, ahead = 2, 0, 0, []
        for _, docs, _, _, _ in parallel.ordered_map(text._setup, arg, text._encode_chunk, counted(), workers):
            consumed += 1
            documents += docs
            ahead.append(pulled[0] - consumed)
        self.assertEqual(documents, 20000)
        self.assertGreater(consumed, 100)
        self.assertLessEqual(max(ahead), 2 * workers + 1)


class SftTest(PrepareDataTest):
    PAIRS = [("What is two plus two?\n", "The answer is four."),
             ("Capital of France:", " Paris, of course. Paris is the capital of France and the answer is Paris."),
             ("hello\n", "world")]

    def pair_example(self, prompt, completion):
        """The expected (ids, mask): <s> prompt completion </s> from separate encodes of the parts."""
        p, c = self.tok.encode(prompt).ids, self.plain(completion)
        return p + c + [self.eos], [0] * len(p) + [1] * (len(c) + 1)

    def write_jsonl(self, name, records):
        return self.write(name, "".join(json.dumps(r) + "\n" for r in records))

    def test_prompt_completion_mask(self):
        path = self.write_jsonl("pairs.jsonl", [{"prompt": p, "completion": c} for p, c in self.PAIRS])
        out = self.path("pairs.bin")
        self.run_script("sft", "--tokenizer", self.tok_dir, "--output", out, path)
        _, _, tokens = read_token_file(out)
        mask = read_mask_file(out + ".mask")
        expected = [self.pair_example(p, c) for p, c in self.PAIRS]
        self.assertEqual(tokens, [t for ids, _ in expected for t in ids])
        self.assertEqual(mask, [m for _, m in expected for m in m])

    def test_a_token_straddling_the_completion_start_is_trained(self):
        path = self.write_jsonl("straddle.jsonl", [{"prompt": "The answer is ", "completion": "four"}])
        out = self.path("straddle.bin")
        self.run_script("sft", "--tokenizer", self.tok_dir, "--output", out, path)
        _, _, tokens = read_token_file(out)
        mask = read_mask_file(out + ".mask")
        self.assertEqual(tokens, self.tok.encode("The answer is four").ids + [self.eos])
        self.assertEqual(self.tok.decode([t for t, m in zip(tokens, mask) if m], skip_special_tokens=False),
                         " four</s>")

    def test_packed_rows(self):
        a = {"prompt": "What is two plus two?\n", "completion": "The answer is four."}
        b = {"prompt": "hello\n", "completion": "world"}
        length = {name: len(self.pair_example(**r)[0]) for name, r in (("a", a), ("b", b))}
        seq_len = length["a"] + length["b"]
        # b1 is one token longer than b: a + b fill a row exactly, a + b1 do not fit.
        b1 = next({"prompt": "hello\n", "completion": c} for c in sentences(500, seed=6)
                  if len(self.pair_example("hello\n", c)[0]) == length["b"] + 1)
        long = {"prompt": "Capital of France:", "completion": " " + " ".join(sentences(20, seed=7))}
        records = [a, b, a, b1, long, b, a]
        examples = [self.pair_example(**r) for r in records]
        self.assertGreater(len(examples[4][0]), seq_len)
        path = self.write_jsonl("pack.jsonl", records)
        out = self.path("pack.bin")
        result = self.run_script("sft", "--tokenizer", self.tok_dir, "--output", out, "--seq-len", str(seq_len),
                                 "--workers", "2", "--chunk-bytes", "100", path)
        self.assertIn("1 example(s) longer than", result.stdout)
        _, _, tokens = read_token_file(out)
        mask = read_mask_file(out + ".mask")
        # [a b] [a pad] [b1 pad] [long truncated] [b a]
        self.assertEqual((len(tokens), len(mask)), (5 * seq_len, 5 * seq_len))
        # Walk the rows: each holds whole examples (truncated to seq_len), in order, then padding.
        pending = [(ids[:seq_len], m[:seq_len]) for ids, m in examples]
        for start in range(0, len(tokens), seq_len):
            row, row_mask, pos = tokens[start:start + seq_len], mask[start:start + seq_len], 0
            self.assertEqual((row[0], row_mask[0]), (self.bos, 0))
            while pending and row[pos:pos + len(pending[0][0])] == pending[0][0]:
                self.assertEqual(row_mask[pos:pos + len(pending[0][0])], pending[0][1])
                pos += len(pending.pop(0)[0])
            self.assertGreater(pos, 0)
            self.assertEqual(row[pos:], [self.pad] * (seq_len - pos))
            self.assertEqual(row_mask[pos:], [0] * (seq_len - pos))
        self.assertEqual(pending, [])
        # --drop-long: the long example is gone, the others packed the same way.
        self.run_script("sft", "--tokenizer", self.tok_dir, "--output", out, "--seq-len", str(seq_len),
                        "--drop-long", path)
        _, _, tokens = read_token_file(out)
        self.assertEqual(len(tokens), 4 * seq_len)
        kept = [ids for ids, _ in examples if len(ids) <= seq_len]
        self.assertEqual([t for t in tokens if t != self.pad], [t for ids in kept for t in ids])

    def test_the_first_token_of_an_example_is_never_a_target(self):
        path = self.write_jsonl("no_prompt.jsonl", [{"prompt": "", "completion": "hello world"}] * 2)
        out = self.path("no_prompt.bin")
        self.run_script("sft", "--tokenizer", self.tok_dir, "--output", out, "--no-bos", path)
        ids = self.plain("hello world") + [self.eos]
        self.assertEqual(read_token_file(out)[2], ids * 2)
        self.assertEqual(read_mask_file(out + ".mask"), ([0] + [1] * (len(ids) - 1)) * 2)

    def test_messages_mask_only_the_assistant_turns(self):
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                    {"role": "user", "content": "And two plus two?"},
                    {"role": "assistant", "content": "The answer is four."}]
        path = self.write_jsonl("chat.jsonl", [{"messages": messages}, {"prompt": "hello\n", "completion": "world"}])
        out = self.path("chat.bin")
        self.run_script("sft", "--tokenizer", self.tok_dir, "--output", out, "--workers", "1", path)
        _, _, tokens = read_token_file(out)
        mask = read_mask_file(out + ".mask")
        rendered = ("<s><|system|>\nBe brief.\n<|user|>\nWhat is the capital of France?\n<|assistant|>\nParis.</s>\n"
                    "<|user|>\nAnd two plus two?\n<|assistant|>\nThe answer is four.</s>")
        chat = self.plain(rendered)
        self.assertEqual(tokens, chat + self.pair_example("hello\n", "world")[0])
        self.assertEqual(mask[len(chat):], self.pair_example("hello\n", "world")[1])
        runs = [[token for token, _ in run] for m, run in
                itertools.groupby(zip(tokens[:len(chat)], mask[:len(chat)]), key=lambda pair: pair[1]) if m]
        self.assertEqual([self.tok.decode(r, skip_special_tokens=False) for r in runs],
                         ["Paris.</s>", "The answer is four.</s>"])

    def test_errors_name_the_file_and_line_and_leave_nothing(self):
        good = '{"prompt": "a", "completion": "b"}\n'
        cases = (('{"prompt": "a", "completion": ', "bad JSON"),
                 ('{"prompt": "a"}', "expected the keys 'prompt' and 'completion', or 'messages'"),
                 ('{"prompt": "a", "completion": "  "}', "empty completion"),
                 ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
                 ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}',
                  "empty completion"))
        out = self.path("bad_sft.bin")
        for line, what in cases:
            path = self.write("bad_sft.jsonl", good + "\n" + line + "\n")
            result = self.run_script("sft", "--tokenizer", self.tok_dir, "--output", out, path, ok=False)
            self.assertEqual(result.returncode, 1, line)
            self.assertIn("bad_sft.jsonl:3: ", result.stderr)
            self.assertIn(what, result.stderr)
            for name in (out, out + ".tmp", out + ".mask", out + ".mask.tmp"):
                self.assertFalse(os.path.exists(name), name)

    def test_mask_from_spans(self):
        from coat_data.sft import mask_from_spans
        offsets = [(0, 2), (2, 5), (5, 5), (5, 9), (9, 10), (10, 14)]
        self.assertEqual(list(mask_from_spans(offsets, [(4, 9), (14, 15)])), [0, 1, 1, 1, 0, 0])
        self.assertEqual(list(mask_from_spans(offsets, [(0, 1), (9, 15)])), [1, 0, 0, 0, 1, 1])


def main():
    missing = []
    for package in ("tokenizers", "jinja2"):
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
    if missing:
        print(f"SKIPPED: the Python package(s) {', '.join(missing)} are not installed (scripts/setup.sh installs "
              "them with pip)")
        return 77
    program = unittest.main(module=__name__, exit=False, verbosity=2)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
