"""Numbers in printed and Markdown tables: one formatter, with "n/a" for what does not apply.

Imports nothing, so a benchmark may use it before JAX or PyTorch is loaded.
"""


def fmt(value, spec: str) -> str:
    """``value`` formatted with ``spec`` (``format``'s mini-language), or "n/a" for None.

    Args:
      value: a number, or None where the number does not apply (a leak of a straight-through
        model, a Jaccard of a plain VAE).
      spec: the format spec, for example ".2f" or ",.0f".
    """
    return "n/a" if value is None else format(value, spec)
