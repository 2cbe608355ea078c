"""What the notebooks' cells need besides the work: errors shown as their message alone, a check that only the
notebook's own parameters were set (by papermill or in the parameters cell), and a note when a template's defaults
are not the schema's.

Jupyter and papermill print an exception's whole traceback. For a stop the researcher answers by changing a
parameter or re-running (a finished run_dir, a parameter the notebook does not have, an interrupt), the message
is all there is to read: IPython shows an exception's `_render_traceback_()` in place of its traceback. With
APIKIT_DEBUG=1 in the environment (`--debug` on apikit's command lines sets it for the kernels they start) the
whole traceback is shown instead. Plain Python: importing it loads nothing else.
"""
import ast
import difflib
import os
import sys
from contextlib import contextmanager

__all__ = ["OneLineError", "UnknownParameter", "INJECTED", "DEBUG", "debugging", "did_you_mean", "meant", "unknown_message",
           "check_injected", "template_differences", "one_line_errors"]

# papermill's injected cell starts with this comment (papermill.translators.PythonTranslator.codify).
INJECTED = "# Parameters\n"
DEBUG = "APIKIT_DEBUG"  # set to 1: apikit's one-line errors show their whole traceback


def debugging():
    """Whether APIKIT_DEBUG asks for whole tracebacks."""
    return os.environ.get(DEBUG, "") not in ("", "0")


class OneLineError:
    """Mixin for an exception that Jupyter and papermill show as one line, `Name: message`, without a traceback
    (with APIKIT_DEBUG set, with it)."""

    @property
    def _render_traceback_(self):
        if debugging():  # IPython renders an exception without this attribute with its whole traceback
            raise AttributeError("_render_traceback_")
        return lambda: [f"{type(self).__name__}: {self}"]


class UnknownParameter(OneLineError, ValueError):
    """A parameter that the notebook (or the function) does not have."""


def did_you_mean(name, valid):
    """The valid name `name` was most likely meant for: a close spelling (difflib), or the initials of its words
    ('learning_rate' -> 'lr'); None when nothing is close."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    if close:
        return close[0]
    initials = "".join(word[0] for word in name.split("_") if word)
    return initials if len(initials) > 1 and initials in valid else None


def meant(unknown, valid):
    """'lrr (did you mean lr?), colour': each unknown name with the valid one it was likely meant for."""
    return ", ".join(n + (f" (did you mean {m}?)" if (m := did_you_mean(n, valid)) else "") for n in unknown)


def unknown_message(unknown, valid):
    """'lrr (did you mean lr?): not a parameter of this notebook'."""
    return f"{meant(unknown, valid)}: not {'a parameter' if len(unknown) == 1 else 'parameters'} of this notebook"


def _assigned(source):
    """The names a cell assigns at its top level (`x = 1`, `x: int = 1`), in order."""
    return list(_literals(source, values=False))


def _literals(source, values=True):
    """{name: value} of a cell's top-level assignments, in order; a value that is not a literal is left out (with
    `values=False`, every name, its value None)."""
    out = {}
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return out
    for node in body:
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            targets = [node.target.id]
        else:
            continue
        try:
            value = ast.literal_eval(node.value) if values else None
        except (ValueError, TypeError, SyntaxError):
            continue
        out.update(dict.fromkeys(targets, value))
    return out


def template_differences(source, defaults):
    """[(name, the template's value, the schema's)] for the parameters that a parameters cell's `source` sets to
    other values than `defaults` (the schema's), in the cell's order; names the schema lacks are not compared."""
    return [(name, value, defaults[name]) for name, value in _literals(source).items()
            if name in defaults and (value != defaults[name] or isinstance(value, bool) != isinstance(defaults[name], bool))]


def _kernel_history():
    from IPython import get_ipython
    shell = get_ipython()
    return list(shell.user_ns.get("In", [])) if shell is not None else []


def _differences_note(source, defaults, template):
    """The note a papermill run prints when its template's parameters cell is not the schema's, or None."""
    diff = template_differences(source, defaults)
    if not diff:
        return None
    shown = ", ".join(f"{name} {value!r} (apikit's default: {default!r})" for name, value, default in diff)
    return (f"note: this notebook's parameters cell differs from apikit's defaults: {shown}. They are the defaults of "
            f"every papermill run of it; `git checkout {template}` restores the template.")


def _parameters_cell(history, before):
    """The index of the parameters cell as run before `history[before]`: the latest cell that only assigns names
    (a parameters cell holds literals and comments), or None. A cell with any other statement (an import, a call)
    is not taken for it: its names are the notebook's working variables, never parameters."""
    for i in range(before - 1, -1, -1):
        try:
            body = ast.parse(history[i]).body
        except SyntaxError:
            continue
        if body and all(isinstance(node, (ast.Assign, ast.AnnAssign)) for node in body):
            return i
    return None


def _unknown(names, valid, what, fix):
    """UnknownParameter for `names` that the notebook's parameters (`valid`) lack, in one line."""
    them = "it" if len(names) == 1 else "them"
    return UnknownParameter(f"{unknown_message(names, valid)} ({what}, and the run would go on without {them}){fix}; "
                            f"valid ones: {', '.join(valid) or 'none'}. `papermill --help-notebook NOTEBOOK` "
                            "describes them.")


def check_injected(history=None, defaults=None, template="notebooks/NAME.ipynb", log=print):
    """Stop with `UnknownParameter` when a name that is not one of the notebook's parameters was set: injected by
    papermill, or typed into the parameters cell (in JupyterLab, or saved in the template).

    papermill only warns about `-p name value` for a name the notebook lacks, and the run goes on without it (a
    typo trains with the default); a name typed into the parameters cell is read by nothing. `history` is the
    kernel's input history (IPython's `In`, by default): in a papermill run the injected cell follows the
    parameters cell, and its names are checked against that cell's. `defaults`: the schema's defaults of the
    notebook's parameters, its only valid names; then the parameters cell's names are checked against them too
    (in Lab, the parameters cell is the last cell run before this one that holds assignments alone). A papermill
    run (no live front end) of a template whose parameters cell holds other values, e.g. edited and saved in Lab,
    says which, and how to restore `template`.
    """
    history = _kernel_history() if history is None else list(history)
    injected = next((i for i in range(len(history) - 1, 0, -1) if history[i].startswith(INJECTED)), None)
    if injected is not None:
        valid = _assigned(history[injected - 1])
        unknown = [n for n in _assigned(history[injected]) if n not in valid]
        if unknown:
            raise _unknown(unknown, valid, "papermill only warns", "")
    if defaults is None:
        return
    at = injected - 1 if injected is not None else _parameters_cell(history, len(history) - 1)
    if at is None:
        return
    unknown = [n for n in _assigned(history[at]) if n not in defaults]
    if unknown:
        them = "it" if len(unknown) == 1 else "them"
        raise _unknown(unknown, list(defaults), "set in the parameters cell", f": rename or remove {them} there")
    from .progress import live_display  # fastprogress: loaded only for a template's check
    note = _differences_note(history[at], defaults, template) if not live_display() else None
    if note:
        log(note)


@contextmanager
def one_line_errors(prog):
    """For a command line: an apikit stop (`OneLineError`) ends the process with one line, `prog: Name: message`, and exit
    status 2 (130 for an interrupt), as argparse ends on a bad option; with `--debug` (APIKIT_DEBUG) the whole
    traceback."""
    try:
        yield
    except BaseException as e:
        if not isinstance(e, OneLineError) or debugging():
            raise
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        raise SystemExit(130 if isinstance(e, KeyboardInterrupt) else 2) from None
