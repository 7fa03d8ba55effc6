"""Frozen records for the Lambdas' cold start: ``@dataclass(frozen=True)`` without its import cost.

``@dataclass`` writes each generated method (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__``, ``__delattr__``) as source text and compiles it on every import: 0.6 to 1 ms a
class, some 15 ms of the IdP's cold start. A class decorated with ``@frozen`` writes its
``__init__`` out by hand instead (compiled once, into the .pyc) and gets the other five here as
plain functions; ``dataclasses.fields``, ``replace``, ``asdict`` and ``__match_args__`` work as
before, because the class is still processed by ``dataclass`` (with nothing to generate).

What stays the same as ``@dataclass(frozen=True)``: ``__init__``'s signature (checked here against
the fields, names and defaults, when the class is defined), ``__doc__``, ``repr``, ``==`` and
``hash`` (over the same fields, as tuples), ``FrozenInstanceError`` with the same messages. What
differs: ``__dataclass_params__`` says ``frozen=False`` (nothing here reads it), so a
``@dataclass(frozen=True)`` subclass of a ``@frozen`` record is refused by ``dataclass`` ("cannot
inherit frozen dataclass from a non-frozen one") and a plain ``@dataclass`` one is not; no record
here is subclassed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, FrozenInstanceError
from reprlib import recursive_repr


def frozen(cls):
    if "__init__" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__}: @frozen needs an __init__ written out")
    cls.__init__.__annotations__["return"] = None  # as the generated one has (``-> None``)
    cls = dataclasses.dataclass(cls, init=False, repr=False, eq=False)
    fields = dataclasses.fields(cls)
    _check_init(cls, fields)
    shown = tuple(f.name for f in fields if f.repr)
    compared = tuple(f.name for f in fields if f.compare)
    hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    names = frozenset(f.name for f in fields)

    @recursive_repr()
    def __repr__(self):
        return self.__class__.__qualname__ + "(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)
        return NotImplemented

    def __hash__(self):
        return hash(tuple(getattr(self, n) for n in hashed))

    def __setattr__(self, name, value):
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self, name):
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    for fn in (__repr__, __eq__, __hash__, __setattr__, __delattr__):
        fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
        setattr(cls, fn.__name__, fn)
    return cls


def _check_init(cls, fields) -> None:
    """The hand-written ``__init__`` takes exactly the init fields, in order, with their defaults."""
    init = cls.__dict__["__init__"]
    code = init.__code__
    params = code.co_varnames[1:code.co_argcount]
    wanted = [f for f in fields if f.init]
    defaults = tuple(f.default for f in wanted if f.default is not MISSING)
    if (
        code.co_kwonlyargcount
        or params != tuple(f.name for f in wanted)
        or any(f.default_factory is not MISSING for f in fields)
        or [(type(d), d) for d in (init.__defaults__ or ())] != [(type(d), d) for d in defaults]
    ):
        raise TypeError(f"{cls.__qualname__}.__init__ does not match the fields {[f.name for f in wanted]}")
