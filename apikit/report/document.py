"""The report as a document: a list of blocks ("h", level, text), ("p", text), ("table", DataFrame),
("img", path, alt), ("code", text) rendered as markdown (README.md), HTML (report.html) or notebook displays.
A code block holds shell commands, one a line, that never wrap.

Text uses a small markdown subset, the same in every output: `code`, **strong** and *emphasis*.
"""
import html
import math
import re
from pathlib import Path

__all__ = ["MISSING", "CSS", "inline_html", "markdown_table", "html_table", "to_markdown", "to_html", "Block", "displays"]

MISSING = "—"
# The one style sheet of the HTML apikit writes: report.html and executed notebooks (`apikit.execute.export_html`,
# which leaves out nbconvert's 300 kB one). The last two rules are for nbconvert's markup: code cells, prompts.
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px;display:block;overflow-x:auto}"
       "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
       "img{max-width:100%;display:block;margin:.5em 0 .3em}code{background:#f3f3f3;padding:0 3px}"
       "pre,.jp-InputArea-editor{background:#f3f3f3;padding:4px 8px;overflow-x:auto}"
       ".jp-InputPrompt,.jp-OutputPrompt{display:none}")


def inline_html(text):
    """Escaped HTML of one line of the markdown subset: `code`, **strong**, *emphasis*."""
    out = []
    for part in re.split(r"(`[^`]+`)", str(text)):
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part)
        s = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def _cell_text(v):
    return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def markdown_table(df):
    """A DataFrame as a markdown table, without its index."""
    if df.empty:
        return "*(none)*"
    md = lambda v: _cell_text(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(md(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def html_table(df):
    """A DataFrame as an HTML table, without its index, cells in the markdown subset; scrolls when too wide."""
    if df.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{inline_html(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{inline_html(_cell_text(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_markdown(doc):
    """README.md's text."""
    out = []
    for kind, *args in doc:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind == "p":
            out.append(args[0])
        elif kind == "table":
            out.append(markdown_table(args[0]))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
        elif kind == "code":
            out.append(_fenced(args[0]))
    return "\n\n".join(out) + "\n"


def _fenced(text):
    """A fenced markdown code block of shell commands."""
    return f"```bash\n{text}\n```"


def to_html(doc, title):
    """report.html's text: one self-contained page (no remote resources)."""
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>"]
    for kind, *args in doc:
        if kind == "h":
            out.append(f"<h{args[0]}>{inline_html(args[1])}</h{args[0]}>")
        elif kind == "p":
            out.append(_paragraph_html(args[0]))
        elif kind == "table":
            out.append(html_table(args[0]))
        elif kind == "img":
            out.append(f'<img src="{html.escape(args[0])}" alt="{html.escape(args[1])}">')
        elif kind == "code":
            out.append(f"<pre><code>{html.escape(args[0])}</code></pre>")
    return "\n".join(out) + "\n</body></html>\n"


def _paragraph_html(text):
    """A paragraph, or a bullet list when every line starts with "- " (as markdown reads it)."""
    lines = text.splitlines()
    if lines and all(l.startswith("- ") for l in lines):
        return "<ul>" + "".join(f"<li>{inline_html(l[2:])}</li>" for l in lines) + "</ul>"
    return f"<p>{inline_html(text)}</p>"


class Block:
    """One block for IPython's `display`: its rich forms (markdown, HTML, PNG) and, as its plain text, the block's
    markdown, which is what `papermill --log-output` and a terminal print (not "<...Markdown object>")."""

    def __init__(self, bundle, text):
        self.bundle, self.text = bundle, text

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {**self.bundle, "text/plain": self.text}


def displays(doc, out_dir):
    """The document as objects for IPython's `display` (tables without an index), images read from `out_dir`."""
    import base64
    items = []
    for kind, *args in doc:
        if kind == "h":
            text = "#" * args[0] + " " + args[1]
            items.append(Block({"text/markdown": text}, text))
        elif kind == "p":
            items.append(Block({"text/markdown": args[0]}, args[0]))
        elif kind == "table":
            items.append(Block({"text/html": html_table(args[0])}, markdown_table(args[0])))
        elif kind == "img":
            png = base64.b64encode((Path(out_dir) / args[0]).read_bytes()).decode("ascii")
            items.append(Block({"image/png": png}, f"[figure: {args[0]}]"))
        elif kind == "code":
            items.append(Block({"text/markdown": _fenced(args[0])}, args[0]))
    return items
