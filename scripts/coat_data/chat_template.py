"""Chat templates rendered with jinja2 as transformers renders them (apply_chat_template), and the character
spans of the assistant turns in a rendered conversation.

The environment is transformers': a sandbox with trim_blocks and lstrip_blocks, loop controls, a tojson
filter that does not escape HTML, raise_exception and strftime_now, the {% generation %} tag (rendered as
its body), and the special tokens (bos_token, eos_token, ...) as variables.

Assistant spans come from rendering incrementally: for the assistant message i, the conversation before it
with add_generation_prompt=True ends where the assistant's text begins, and the conversation up to and
including it ends where its turn ends (its end-of-turn token included). Both must be prefixes of the whole
rendering; a template that renders earlier turns differently (one that drops the reasoning of past turns)
is refused rather than masked wrongly.
"""
import datetime
import json

from .errors import DataError


def _import_jinja2():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError as e:
        raise DataError("the Python package 'jinja2' is missing (chat templates need it): pip install jinja2 "
                        "(scripts/setup.sh installs it)") from e
    return jinja2


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def _generation_tag_extension(jinja2):
    from jinja2 import nodes

    class GenerationTag(jinja2.ext.Extension):
        """{% generation %}...{% endgeneration %} (transformers marks assistant text with it): the body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

        def _render_body(self, caller):
            return caller()

    return GenerationTag


class ChatTemplate:
    def __init__(self, source, variables):
        """`source`: the template text; `variables`: the special tokens it sees (bos_token, ...)."""
        jinja2 = _import_jinja2()
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True,
            extensions=[_generation_tag_extension(jinja2), jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = self._raise_exception
        env.globals["strftime_now"] = _strftime_now
        self._template_error = jinja2.TemplateError
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise DataError(f"the chat template does not compile: {e}") from e
        self._variables = dict(variables)

    def _raise_exception(self, message):
        raise self._template_error(message)

    def render(self, messages, add_generation_prompt=False):
        """The conversation as text; a template error (raise_exception included) becomes a DataError."""
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         tools=None, documents=None, **self._variables)
        except self._template_error as e:
            raise DataError(f"the chat template refused the conversation: {e}") from e
        except Exception as e:  # a template indexing a missing key, a type error inside it, ...
            raise DataError(f"the chat template failed on the conversation: {type(e).__name__}: {e}") from e

    def assistant_spans(self, messages):
        """(text, spans): the whole conversation rendered, and the [start, end) character span of each
        assistant turn in it (its content and the end-of-turn text the template puts after it)."""
        text = self.render(messages)
        spans = []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True)
            through = self.render(messages[:i + 1])
            if not through.startswith(before):
                raise DataError(f"the chat template renders the conversation before message {i + 1} with "
                                "add_generation_prompt=True differently from the start of the conversation through "
                                "that assistant message, so the assistant's text cannot be located")
            if not text.startswith(through):
                raise DataError(f"the chat template renders the conversation through message {i + 1} differently "
                                "from the start of the whole conversation (does it rewrite earlier turns?), so the "
                                "assistant's text cannot be located")
            spans.append((len(before), len(through)))
        return text, spans
