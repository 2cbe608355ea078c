"""What the notebooks' cells need besides the work: errors shown as their message alone, and a check that papermill
passed only the notebook's own parameters.

Jupyter and papermill print an exception's whole traceback. For a stop the researcher answers by changing a
parameter or re-running (a finished run_dir, a parameter the notebook does not have, an interrupt), the message
is all there is to read: IPython shows an exception's `_render_traceback_()` in place of its traceback.
Plain Python: importing it loads nothing else.
"""
import ast

__all__ = ["Shown", "UnknownParameter", "INJECTED", "check_injected"]

# papermill's injected cell starts with this comment (papermill.translators.PythonTranslator.codify).
INJECTED = "# Parameters\n"


class Shown:
    """Mixin for an exception that Jupyter and papermill show as one line, `Name: message`, without a traceback."""

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


class UnknownParameter(Shown, ValueError):
    """papermill passed a parameter that the notebook's parameters cell does not have."""


def _assigned(source):
    """The names a cell assigns at its top level (`x = 1`, `x: int = 1`), in order."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def check_injected(history=None):
    """Stop with `UnknownParameter` when papermill injected a name that the parameters cell does not assign.

    papermill only warns about `-p name value` for a name the notebook lacks, and the run goes on without it (a
    typo trains with the default). `history` is the kernel's input history (IPython's `In`, by default): in a
    papermill run the injected cell follows the parameters cell. A notebook run without papermill has no injected
    cell, and nothing is checked.
    """
    if history is None:
        from IPython import get_ipython
        shell = get_ipython()
        history = shell.user_ns.get("In", []) if shell is not None else []
    history = list(history)
    for i in range(len(history) - 1, -1, -1):
        if not history[i].startswith(INJECTED):
            continue
        valid = _assigned(history[i - 1]) if i > 0 else []
        unknown = [n for n in _assigned(history[i]) if n not in valid]
        if unknown:
            raise UnknownParameter(
                f"{', '.join(unknown)}: not {'a parameter' if len(unknown) == 1 else 'parameters'} of this notebook "
                f"(papermill only warns, and the run would go on without {'it' if len(unknown) == 1 else 'them'}); "
                f"valid ones: {', '.join(valid) or 'none'}. `papermill --help-notebook NOTEBOOK` describes them.")
        return
