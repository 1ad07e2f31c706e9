"""The tiny model's chat template: ChatML turns with Hermes-style tool calls.

The template follows the format vLLM's ``hermes`` tool parser reads: tools are listed as JSON
inside ``<tools></tools>`` in the system turn, an assistant's tool calls are
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` blocks, and tool results come
back in a user turn as ``<tool_response>`` blocks (consecutive tool messages share one turn).

It is rendered by transformers' Jinja environment (``trim_blocks``, ``lstrip_blocks``, a
``tojson`` that does not HTML-escape, ``raise_exception``); every literal is written as a
``{{ '...' }}`` expression so the output never depends on the template's own layout.
"""

from typing import Final

BOS_TOKEN: Final = "<|endoftext|>"
TURN_START_TOKEN: Final = "<|im_start|>"
TURN_END_TOKEN: Final = "<|im_end|>"
SPECIAL_TOKENS: Final = (BOS_TOKEN, TURN_START_TOKEN, TURN_END_TOKEN)
# Plain text to the tokenizer (not "special"): vLLM must not strip them from the output, and the
# hermes parser looks them up in the vocabulary by name.
MARKUP_TOKENS: Final = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

CHAT_TEMPLATE: Final = r"""
{%- macro text(content) -%}
    {%- if content is none -%}
    {%- elif content is string -%}
        {{- content -}}
    {%- elif content is mapping -%}
        {{- content.text if content.text is defined else '' -}}
    {%- elif content is iterable -%}
        {%- for part in content -%}
            {%- if part is string -%}
                {{- part -}}
            {%- elif part.type == 'text' -%}
                {{- part.text -}}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{- content | string -}}
    {%- endif -%}
{%- endmacro -%}
{%- if messages and messages[0].role == 'system' -%}
    {%- set system_text = text(messages[0].content) -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system_text = '' -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- if tools -%}
    {{- '<|im_start|>system\n' -}}
    {%- if system_text -%}
        {{- system_text + '\n\n' -}}
    {%- endif -%}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' -}}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
    {%- for tool in tools -%}
        {{- '\n' -}}
        {{- (tool.function if tool.function is defined else tool) | tojson -}}
    {%- endfor -%}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and ' -}}
    {{- 'arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n' -}}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif system_text -%}
    {{- '<|im_start|>system\n' + system_text + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in turns -%}
    {%- if message.role == 'user' or message.role == 'system' -%}
        {{- '<|im_start|>' + message.role + '\n' + text(message.content) + '<|im_end|>\n' -}}
    {%- elif message.role == 'assistant' -%}
        {%- set content = text(message.content) -%}
        {{- '<|im_start|>assistant\n' + content -}}
        {%- for call in (message.tool_calls or []) -%}
            {%- set function = call.function if call.function is defined else call -%}
            {%- if content or not loop.first -%}
                {{- '\n' -}}
            {%- endif -%}
            {{- '<tool_call>\n{"name": ' + (function.name | tojson) + ', "arguments": ' -}}
            {%- if function.arguments is string -%}
                {{- function.arguments -}}
            {%- else -%}
                {{- function.arguments | tojson -}}
            {%- endif -%}
            {{- '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- elif message.role == 'tool' -%}
        {%- if loop.first or turns[loop.index0 - 1].role != 'tool' -%}
            {{- '<|im_start|>user' -}}
        {%- endif -%}
        {{- '\n<tool_response>\n' + text(message.content) + '\n</tool_response>' -}}
        {%- if loop.last or turns[loop.index0 + 1].role != 'tool' -%}
            {{- '<|im_end|>\n' -}}
        {%- endif -%}
    {%- else -%}
        {{- raise_exception('unknown message role: ' + message.role) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
""".strip()
