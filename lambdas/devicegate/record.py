"""Records for the Lambdas' cold start: ``@dataclass`` without its import cost.

``@dataclass`` writes each generated method (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__``, ``__delattr__``) as source text and compiles it on every import, and even with
nothing to generate it still inspects every annotation and works out the class's signature for
its ``__doc__``: 0.6 to 1 ms a class, then 0.2 to 0.4 ms, of a cold start made of some twenty
such classes. A class decorated with ``@frozen`` (``@dataclass(frozen=True)``) or ``@mutable``
(``@dataclass``) writes its ``__init__`` out by hand instead (compiled once, into the .pyc) and
gets the other methods here as plain functions; its ``dataclasses.Field`` objects are made here
too, so ``dataclasses.fields``, ``replace``, ``asdict``, ``is_dataclass`` and ``__match_args__``
work as before. The ``__doc__`` a dataclass gets (``Name(signature)``) is worked out when first
read.

What stays the same as the dataclass: ``__init__``'s signature (checked here against the fields,
names and defaults, when the class is defined; a ``default_factory`` field's default is
:data:`FACTORY`, shown as ``<factory>`` as the dataclass shows it), ``__doc__``, ``repr``, ``==``
and ``hash`` (over the same fields, as tuples; ``@mutable`` records are unhashable),
``FrozenInstanceError`` with the same messages, the refusal of a mutable default. What differs:
``__dataclass_params__`` says ``frozen=False`` (nothing here reads it), so a
``@dataclass(frozen=True)`` subclass of a ``@frozen`` record is refused by ``dataclass``
("cannot inherit frozen dataclass from a non-frozen one") and a plain ``@dataclass`` one is not;
no record here is subclassed. A class these decorators cannot describe without ``dataclass``'s
own field collection (a base class with fields, a ``ClassVar``/``InitVar``/``KW_ONLY``
annotation) is handed to ``dataclass`` itself, as before.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import MISSING, FrozenInstanceError
from operator import itemgetter
from reprlib import recursive_repr


class _Factory:
    __slots__ = ()

    def __repr__(self):
        return "<factory>"


# The default a hand-written ``__init__`` gives a ``default_factory`` field: ``x=FACTORY`` then
# ``x = list() if x is FACTORY else x``, as the generated one does.
FACTORY = _Factory()


@dataclasses.dataclass(init=False, repr=False, eq=False)
class _Params:
    """Its ``__dataclass_params__`` (init, repr, eq False) is what every record gets."""


_PARAMS = _Params.__dataclass_params__
_FIELD = dataclasses._FIELD  # what dataclass puts in a Field's _field_type for a field (3.7 to 3.14)


def frozen(cls):
    """``@dataclass(frozen=True)`` for a class with its ``__init__`` written out."""
    return _record(cls, frozen=True)


def mutable(cls):
    """``@dataclass`` (eq, not frozen: no hash) for a class with its ``__init__`` written out."""
    return _record(cls, frozen=False)


def _record(cls, frozen: bool):
    if "__init__" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__}: @{'frozen' if frozen else 'mutable'} needs an __init__ written out")
    cls.__init__.__annotations__["return"] = None  # as the generated one has (``-> None``)
    fields = _fields(cls)
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

    methods = [__repr__, __eq__]
    if frozen:
        methods += [__hash__, __setattr__, __delattr__]
    else:
        cls.__hash__ = None  # eq without frozen: what dataclass does
    if sys.version_info >= (3, 13):  # dataclasses add copy.replace() support from 3.13
        def __replace__(self, /, **changes):
            return dataclasses.replace(self, **changes)
        methods.append(__replace__)
    for fn in methods:
        fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
        setattr(cls, fn.__name__, fn)
    return cls


def _fields(cls) -> tuple:
    """The class's dataclass fields, as ``dataclass`` would make them (set on the class)."""
    annotations = cls.__dict__.get("__annotations__", {})
    if any(hasattr(base, "__dataclass_fields__") for base in cls.__mro__[1:]) or any(
            not isinstance(a, str) or "ClassVar" in a or "InitVar" in a or "KW_ONLY" in a for a in annotations.values()):
        # Beyond what is worked out here: dataclass collects the fields (and computes the doc) itself.
        return dataclasses.fields(dataclasses.dataclass(cls, init=False, repr=False, eq=False))
    by_name = {}
    for name, annotation in annotations.items():
        default = cls.__dict__.get(name, MISSING)
        if isinstance(default, dataclasses.Field):
            f = default
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
            if f.kw_only is MISSING:
                f.kw_only = False
        else:
            f = dataclasses.field(default=default, kw_only=False)
        f.name, f.type, f._field_type = name, annotation, _FIELD
        if f.default is not MISSING and f.default.__class__.__hash__ is None:
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: use default_factory")
        by_name[name] = f
    cls.__dataclass_params__ = _PARAMS
    cls.__dataclass_fields__ = by_name
    if "__match_args__" not in cls.__dict__:
        cls.__match_args__ = tuple(f.name for f in by_name.values() if f.init)
    if not cls.__doc__:
        cls.__doc__ = _SignatureDoc(cls)
    return tuple(by_name.values())


class _SignatureDoc:
    """``Name(signature)``, dataclass's ``__doc__`` for a class without a docstring, on first read."""

    def __init__(self, cls):
        self.cls = cls

    def __get__(self, instance, owner=None):
        import inspect

        try:
            text = str(inspect.signature(self.cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            text = ""
        doc = self.cls.__name__ + text
        type.__setattr__(self.cls, "__doc__", doc)
        return doc


def named_tuple(cls):
    """``typing.NamedTuple`` for a ``tuple`` subclass (``__slots__ = ()``) with its ``__new__``
    written out: its fields are the annotations, which ``__new__`` takes in order, with the same
    defaults. The same tuple, attributes, ``repr``, ``_fields``, ``_field_defaults``, ``_make``,
    ``_replace``, ``_asdict``, ``__match_args__``, ``__doc__`` and pickling; without the source
    text ``namedtuple`` compiles for each class on every import (0.3 to 0.5 ms a class). What
    differs: the annotations stay the strings they are written as (typing makes ForwardRefs)."""
    names = tuple(cls.__dict__.get("__annotations__", {}))
    new = getattr(cls.__dict__.get("__new__"), "__func__", None)  # a staticmethod in the class dict
    code = getattr(new, "__code__", None)
    defaults = new.__defaults__ or () if new else ()
    given = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    if (cls.__bases__ != (tuple,) or cls.__dict__.get("__slots__") != () or code is None or code.co_kwonlyargcount
            or code.co_varnames[1:code.co_argcount] != names
            or [(type(d), d) for d in defaults] != [(type(d), d) for d in given.values()]
            or tuple(given) != names[len(names) - len(given):]):
        raise TypeError(f"{cls.__qualname__}: @named_tuple needs tuple, __slots__ = () and a __new__ taking the fields")
    count = len(names)

    @classmethod
    def _make(cls_, iterable):
        result = tuple.__new__(cls_, iterable)
        if len(result) != count:
            raise TypeError(f"Expected {count} arguments, got {len(result)}")
        return result

    def _replace(self, /, **kwds):
        result = self._make(map(kwds.pop, names, self))
        if kwds:
            raise ValueError(f"Got unexpected field names: {list(kwds)!r}")
        return result

    def __repr__(self):
        return self.__class__.__name__ + "(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, self)) + ")"

    def _asdict(self):
        return dict(zip(names, self))

    def __getnewargs__(self):
        return tuple(self)

    for fn in (_make.__func__, _replace, __repr__, _asdict, __getnewargs__):
        fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
    cls._make, cls._replace, cls.__repr__, cls._asdict, cls.__getnewargs__ = (
        _make, _replace, __repr__, _asdict, __getnewargs__)
    cls._fields, cls._field_defaults, cls.__match_args__ = names, dict(given), names
    for index, name in enumerate(names):
        setattr(cls, name, property(itemgetter(index), doc=f"Alias for field number {index}"))
    new.__qualname__ = f"{cls.__qualname__}.__new__"
    if not cls.__doc__:
        cls.__doc__ = f"{cls.__name__}({', '.join(names)})"
    return cls


def _check_init(cls, fields) -> None:
    """The hand-written ``__init__`` takes exactly the init fields, in order, with their defaults."""
    init = cls.__dict__["__init__"]
    code = init.__code__
    params = code.co_varnames[1:code.co_argcount]
    wanted = [f for f in fields if f.init]
    defaults = tuple(f.default if f.default_factory is MISSING else FACTORY
                     for f in wanted if f.default is not MISSING or f.default_factory is not MISSING)
    if (
        code.co_kwonlyargcount
        or params != tuple(f.name for f in wanted)
        or any(f.default_factory is not MISSING and not f.init for f in fields)
        or [(type(d), d) for d in (init.__defaults__ or ())] != [(type(d), d) for d in defaults]
    ):
        raise TypeError(f"{cls.__qualname__}.__init__ does not match the fields {[f.name for f in wanted]}")
