"""`LiftedSpec`: the `serial` spec that `ntkit.lift` returns, printed with the place in
the module of each layer."""

from __future__ import annotations

from ntkit import layers as nl
from ntkit.layers.branching import Serial


class LiftedSpec(Serial):
    """A ``serial`` spec (``repr`` and kernels are exactly ``serial(*layers)``'s) that
    also remembers where each layer came from: ``print(spec)`` shows one layer per line,
    branches indented, with the module path and operation as a comment.

    Attributes:
      layers: the layers, as in ``serial``.
      input_shape: the per-example input shape the module was lifted for.
    """

    def __init__(self, layers: list, places: dict, input_shape: tuple):
        super().__init__(*(layers or [nl.Identity()]))
        self._places = dict(places)
        self.input_shape = tuple(input_shape)

    def __repr__(self) -> str:
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    def __str__(self) -> str:
        lines: list[str] = []
        self._lines(self, 0, lines, top=True)
        width = max(len(text) for text, _ in lines)
        return "\n".join(f"{text:<{width}}  # {place}" if place else text
                         for text, place in lines)

    def _lines(self, layer, depth: int, out: list, top: bool = False) -> None:
        pad = "    " * depth
        kind = "serial" if isinstance(layer, Serial) else \
            "parallel" if isinstance(layer, type(nl.parallel(nl.Identity()))) else None
        if kind is None:
            out.append((f"{pad}{layer!r},", self._places.get(id(layer), "")))
            return
        out.append((f"{pad}{kind}(", ""))
        for inner in layer.layers:
            self._lines(inner, depth + 1, out)
        out.append((f"{pad}){'' if top else ','}", ""))
