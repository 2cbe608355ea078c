"""Reading a file of tensors and plain containers (weights, checkpoints) with `weights_only=True`: it cannot run code.

One reader, one message for a file that is not one; each caller adds what to do about it. torch is imported only
to read, so the parameter schema (`apikit.packaged`) can name such files without it.
"""

__all__ = ["load_tensors"]


def load_tensors(file, fix, error=ValueError):
    """The contents of `file`, read on the CPU with `weights_only=True`; `error` naming the file, why it cannot be
    read, and `fix` (what to do) when it is truncated or holds more than tensors and plain containers."""
    import torch
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise error(f"{file} cannot be read ({type(e).__name__}): it is truncated, or holds more than tensors and "
                    f"plain containers (read with weights_only=True, so it cannot run code); {fix}") from None
