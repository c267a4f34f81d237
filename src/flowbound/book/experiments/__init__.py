"""One function per figure or table: computes (and caches) what a chapter shows.

Each function takes a profile (name or dict) and returns plain data; the
drawing lives in :mod:`flowbound.book.plots`. Modules follow the book's chapters;
this package offers every name each of them exports (its ``__all__``), so a
chapter writes ``experiments.certified_accuracy(profile)``.
"""

from importlib import import_module

#: The chapters' modules, in the book's order.
MODULES = (
    "intro",
    "background",
    "impossibility",
    "deltas",
    "possibility",
    "possibility_glue",
    "certify_digits",
    "seed_record",
    "open_digits",
    "your_network",
    "cnn_record",
    "proofs",
    "report",
)

__all__: list[str] = []
for _module in MODULES:
    _mod = import_module(f"{__name__}.{_module}")
    for _name in _mod.__all__:
        if _name in globals() and globals()[_name] is not getattr(_mod, _name):
            raise ImportError(f"experiments: {_name!r} is exported by two modules")
        globals()[_name] = getattr(_mod, _name)
        __all__.append(_name)
del _module, _mod, _name
