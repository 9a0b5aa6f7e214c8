"""A Hugging Face tokenizer (tokenizer.json) with what tokenizer_config.json says about it: the special tokens,
whether documents start with BOS, the chat template, the vocabulary size and the token width it needs.

Encoding never adds special tokens (BOS and EOS are placed by the callers, once, where the policy says), and
runs without the tokenizer's post-processor, whose only other effect is trimming offsets (ByteLevel
trim_offsets), so the character offsets of the tokens tile the text: the SFT masks rely on that.
"""
import json
import os
from dataclasses import dataclass

from .errors import DataError

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Tried in this order when neither tokenizer_config.json nor special_tokens_map.json names an EOS token.
FALLBACK_EOS_TOKENS = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|eot_id|>")
# Splitting a long document after a line break is exact only when encoding each side alone gives the same
# ids as encoding the whole; these probes check it (Metaspace tokenizers, which prepend "▁", fail it).
SPLIT_PROBES = (("Hello, world.\n", "The next line"), ("1234\n", "5678"), ("abc\n", "def"), ("\u00e9t\u00e9\n", "x"))


def token_width_for_vocab(vocab_size):
    """Bytes per token in a token file: 2 (u16) while every id of the vocabulary fits, else 4 (u32)."""
    return 2 if vocab_size <= 65536 else 4


@dataclass(frozen=True)
class TokenizerSpec:
    """What a worker process needs to load the same tokenizer (picklable)."""
    path: str
    eos: str = None             # --eos: a token or an id; None: the tokenizer's own
    bos: str = "auto"           # "auto" (as the tokenizer does), "yes" (--add-bos), "no" (--no-bos)
    chat_template_file: str = None
    chat_template_name: str = None


def _read_json(path):
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as JSON ({e})") from e


def _token_content(value):
    """A special token as tokenizer_config.json stores it: a string or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _locate(path):
    """(tokenizer.json, its directory) from a directory or the path of the JSON file itself."""
    if os.path.isdir(path):
        tokenizer_json = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tokenizer_json):
            raise DataError(f"{path}: no tokenizer.json in this directory (a Hugging Face tokenizer is expected; "
                            "SentencePiece .model files go through coat-tokenize)")
        return tokenizer_json, path
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such tokenizer file or directory")
    return path, os.path.dirname(os.path.abspath(path))


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise DataError("the Python package 'tokenizers' is missing: pip install tokenizers "
                        "(scripts/setup.sh installs it)") from e
    return tokenizers


class HfTokenizer:
    def __init__(self, spec):
        self.spec = spec
        self.tokenizer_json, self.directory = _locate(spec.path)
        tokenizers = _import_tokenizers()
        try:
            self._tok = tokenizers.Tokenizer.from_file(self.tokenizer_json)
        except Exception as e:  # the Rust side raises plain Exception
            raise DataError(f"{self.tokenizer_json}: not a tokenizer.json the tokenizers library can load ({e})") from e
        self.config = _read_json(os.path.join(self.directory, "tokenizer_config.json")) or {}
        special_map = _read_json(os.path.join(self.directory, "special_tokens_map.json")) or {}
        self.special_tokens = {}
        for key in SPECIAL_TOKEN_KEYS:
            token = _token_content(self.config.get(key)) or _token_content(special_map.get(key))
            if token is not None:
                self.special_tokens[key] = token
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(self._tok.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1)
        self.width = token_width_for_vocab(self.vocab_size)
        self.eos_id = self._resolve_eos(spec.eos)
        self.bos_ids = self._resolve_bos(spec.bos)
        pad = self.special_tokens.get("pad_token")
        self.pad_id = self._tok.token_to_id(pad) if pad is not None else None
        if self.pad_id is None:
            self.pad_id = self.eos_id
        self._tok.post_processor = None  # after _resolve_bos, which asks the post-processor what it adds

    # ---- special tokens ----

    def token_id(self, token, what):
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise DataError(f"{self.tokenizer_json}: the {what} token {token!r} is not in the vocabulary")
        return token_id

    def token(self, token_id):
        return self._tok.id_to_token(token_id)

    def _resolve_eos(self, override):
        if override is not None:
            token_id = self._tok.token_to_id(override)
            if token_id is None and override.isdigit() and int(override) < self.vocab_size:
                token_id = int(override)
            if token_id is None:
                raise DataError(f"--eos {override!r}: neither a token of {self.tokenizer_json} nor an id below "
                                f"its vocabulary size {self.vocab_size}")
            return token_id
        if "eos_token" in self.special_tokens:
            return self.token_id(self.special_tokens["eos_token"], "EOS (eos_token of tokenizer_config.json)")
        for token in FALLBACK_EOS_TOKENS:
            token_id = self._tok.token_to_id(token)
            if token_id is not None:
                return token_id
        raise DataError(f"{self.directory}: no EOS token (tokenizer_config.json and special_tokens_map.json name "
                        f"no eos_token and the vocabulary has none of {', '.join(FALLBACK_EOS_TOKENS)}); pass --eos")

    def _post_processor_prefix(self):
        """The ids the tokenizer's post-processor puts before a text (its BOS), found by encoding a probe."""
        probe = "a"
        plain = self._tok.encode(probe, add_special_tokens=False).ids
        full = self._tok.encode(probe, add_special_tokens=True).ids
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start]
        return []

    def _resolve_bos(self, mode):
        bos = self.special_tokens.get("bos_token")
        if mode == "no":
            return []
        prefix = self._post_processor_prefix()
        if mode == "yes":
            if prefix:
                return prefix
            if bos is None:
                raise DataError(f"--add-bos: {self.directory} names no bos_token and its post-processor adds none")
            return [self.token_id(bos, "BOS (bos_token of tokenizer_config.json)")]
        # As transformers does for the Llama and GPT-NeoX tokenizers: an explicit add_bos_token decides,
        # else whatever the post-processor of tokenizer.json adds.
        add_bos = self.config.get("add_bos_token")
        if isinstance(add_bos, bool):
            if not add_bos:
                return []
            if bos is None:
                raise DataError(f"{self.directory}: tokenizer_config.json sets add_bos_token but names no bos_token")
            return [self.token_id(bos, "BOS (bos_token of tokenizer_config.json)")]
        return prefix

    def template_variables(self):
        """The special tokens a chat template sees (bos_token, eos_token, ...), as transformers passes them."""
        variables = dict(self.special_tokens)
        extra = self.config.get("additional_special_tokens")
        if isinstance(extra, list):
            variables["additional_special_tokens"] = [_token_content(t) for t in extra if _token_content(t)]
        return variables

    def describe(self):
        bos = (" + ".join(repr(self.token(i)) for i in self.bos_ids) + " before each document") if self.bos_ids \
            else "no BOS"
        return (f"{self.tokenizer_json}: vocabulary {self.vocab_size} (u{8 * self.width} tokens), "
                f"EOS {self.token(self.eos_id)!r} ({self.eos_id}), {bos}")

    # ---- encoding (never adds special tokens) ----

    def encode_batch(self, texts):
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_batch_with_offsets(self, texts):
        """[(ids, offsets)], offsets the (start, end) character spans of the tokens in their text."""
        return [(e.ids, e.offsets) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def splits_after_newline(self):
        """Whether "x\\ny" encodes as "x\\n" then "y" (so long documents can be encoded in pieces)."""
        for left, right in SPLIT_PROBES:
            whole, a, b = self.encode_batch([left + right, left, right])
            if whole != a + b:
                return False
        return True

    # ---- chat template ----

    def chat_template_source(self):
        """The chat template: --chat-template FILE, else chat_template.jinja, else tokenizer_config.json's
        chat_template (a string, or a list of {name, template}: --chat-template-name, default "default")."""
        if self.spec.chat_template_file:
            try:
                with open(self.spec.chat_template_file, encoding="utf-8") as f:
                    return f.read()
            except OSError as e:
                raise DataError(f"--chat-template {self.spec.chat_template_file}: cannot read it ({e})") from e
        jinja_file = os.path.join(self.directory, "chat_template.jinja")
        if os.path.isfile(jinja_file):
            with open(jinja_file, encoding="utf-8") as f:
                return f.read()
        template = self.config.get("chat_template")
        if template is None:
            template = (_read_json(os.path.join(self.directory, "chat_template.json")) or {}).get("chat_template")
        if isinstance(template, list):
            name = self.spec.chat_template_name or "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            if name not in named:
                raise DataError(f"{self.directory}: tokenizer_config.json has chat templates {sorted(named)}, not "
                                f"{name!r}; pass --chat-template-name")
            template = named[name]
        if not isinstance(template, str):
            raise DataError(f"{self.directory}: no chat template (tokenizer_config.json has no chat_template and "
                            "there is no chat_template.jinja); pass --chat-template FILE")
        return template
