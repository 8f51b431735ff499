"""Prompt templates: a record -> (prompt text, completion text).

- `alpaca`: the Stanford Alpaca templates (commit 761dc5b), verbatim; no trailing space or newline
  after `### Response:`; the completion is the output (the encoder appends EOS).
- `raw`: OpenAI-legacy concatenation, prompt + completion, nothing added. An Alpaca record under
  `raw` becomes `instruction[\\n\\ninput]\\n\\n` + output.
- `chat`: the tokenizer's own chat template. Alpaca/raw records become one user turn and one
  assistant turn (`instruction[\\n\\ninput]`, `output`).
"""

from __future__ import annotations

from plw.data.schema import Record, record_file, record_line
from plw.errors import PLWError, first_line

TEMPLATES = ("alpaca", "raw", "chat")

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)

# Prompt inversion's instructions (`plw.data.inversion`); here so the built-in tokenizer sees them.
INVERT_INSTRUCTION = "Predict the prompt that generated the following AI output."
INVERT_INSTRUCTION_WITH_INPUT = ("Predict the prompt that generated the below AI output given the following "
                                 "context. Context: {input}")


def check_template(template: str) -> str:
    if template not in TEMPLATES:
        raise PLWError(f"unknown template {template!r}; expected one of {', '.join(TEMPLATES)}", field="template")
    return template


def as_alpaca(record: Record) -> tuple[str, str, str]:
    """(instruction, input, output) of a record (raw: the prompt is the instruction)."""
    fmt = record.format
    if fmt == "alpaca":
        return record.instruction, record.input, record.output
    if fmt == "raw":
        return record.prompt, "", record.completion
    msgs = record.messages
    if len(msgs) == 2 and msgs[0]["role"] == "user" and msgs[1]["role"] == "assistant":
        return msgs[0]["content"], "", msgs[1]["content"]
    raise PLWError("only a single user/assistant exchange can use the alpaca or raw template",
                   file=record_file(record), line=record_line(record), field="messages")


def as_messages(record: Record) -> list[dict]:
    """The record as a conversation."""
    if record.format == "chat":
        return [dict(m) for m in record.messages]
    instruction, inp, output = as_alpaca(record)
    user = f"{instruction}\n\n{inp}" if inp else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def render(record: Record, template: str, tokenizer=None) -> tuple[str, str]:
    """(prompt_text, completion_text); the completion excludes EOS.

    For `chat`, the prompt is the conversation up to the last assistant turn rendered with the
    generation prompt (it contains the template's own special-token text, e.g. `<s>`: tokenise
    it with `add_special_tokens=False`), and the completion is that turn's content.
    """
    check_template(template)
    if template == "alpaca":
        instruction, inp, output = as_alpaca(record)
        if inp != "":
            return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=inp), output
        return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction), output
    if template == "raw":
        if record.format == "raw":
            return record.prompt, record.completion
        instruction, inp, output = as_alpaca(record)
        prompt = f"{instruction}\n\n{inp}" if inp else instruction
        return prompt + "\n\n", output
    msgs = as_messages(record)
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prompt = apply_chat_template(tokenizer, msgs[:last], add_generation_prompt=True, record=record)
    return prompt, msgs[last]["content"]


def apply_chat_template(tokenizer, messages: list[dict], *, add_generation_prompt: bool,
                        record: Record | None = None) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise PLWError("the tokenizer has no chat template", field="template")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except PLWError:
        raise
    except Exception as err:  # jinja raise_exception / TemplateError
        raise PLWError(f"chat template failed: {first_line(err)}",
                       file=record_file(record), line=record_line(record), field="messages") from None


def chat_spans(record: Record, tokenizer) -> tuple[str, list[tuple[int, int, int]]]:
    """The rendered conversation and, per message, its character span (start, end, index).

    The span of message i runs from the end of the rendering of messages[:i] (with the generation
    prompt when message i is an assistant turn, so the assistant header counts as scaffolding)
    to the end of the rendering of messages[:i+1]. Text outside every span is scaffolding.
    This needs a prefix-stable template (rendering a conversation extends the rendering of
    each of its prefixes), which is checked.
    """
    msgs = as_messages(record)
    full = apply_chat_template(tokenizer, msgs, add_generation_prompt=False, record=record)
    spans = []
    prev_end = 0
    for i, m in enumerate(msgs):
        head = apply_chat_template(tokenizer, msgs[:i], add_generation_prompt=m["role"] == "assistant",
                                   record=record) if i else ""
        if m["role"] == "assistant" and i == 0:
            head = apply_chat_template(tokenizer, [], add_generation_prompt=True, record=record)
        end_text = apply_chat_template(tokenizer, msgs[:i + 1], add_generation_prompt=False, record=record)
        if not full.startswith(end_text) or not end_text.startswith(head) or len(head) < prev_end:
            raise PLWError("the chat template is not prefix-stable, so turns cannot be located",
                           file=record_file(record), line=record_line(record), field=f"messages[{i}]")
        end = len(end_text)
        if m["role"] == "assistant":
            # Whitespace after the turn's last token (ChatML's newline after <|im_end|>) is never
            # generated: scaffolding, not completion.
            end = len(head) + len(end_text[len(head):].rstrip()) or end
        spans.append((len(head), end, i))
        prev_end = len(end_text)
    return full, spans
