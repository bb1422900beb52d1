"""``python -m ntkit.cli``: the ``ntkit`` command."""

from ntkit.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
