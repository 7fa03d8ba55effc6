"""Every @frozen record behaves as the @dataclass(frozen=True) it replaces, and every @mutable one
as the @dataclass: the same __init__ signature and __doc__, repr, ==, hash (none for @mutable),
frozen errors, fields, replace and asdict."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import devicegate
from devicegate import record


def _records(kind):
    """The classes of the Lambdas' modules that record.py made: ``kind`` tells which."""
    found = []
    for info in pkgutil.walk_packages(devicegate.__path__, "devicegate."):
        if info.name.startswith(("devicegate.local", "devicegate.ops", "devicegate.cli", "devicegate.__main__")):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and value.__module__ == module.__name__ and kind(value)
                    and getattr(value.__repr__, "__module__", None) == record.__name__):
                found.append(value)
    return found


CLASSES = _records(dataclasses.is_dataclass)


def _frozen(cls) -> bool:
    return cls.__setattr__ is not object.__setattr__


def _reference(cls):
    """The class as @dataclass(frozen=True) (@dataclass for a @mutable one) makes it, from the same fields."""
    namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                 "__annotations__": {f.name: f.type for f in dataclasses.fields(cls)}}
    for f in dataclasses.fields(cls):
        namespace[f.name] = dataclasses.field(default=f.default, default_factory=f.default_factory, repr=f.repr,
                                              hash=f.hash, compare=f.compare, init=f.init, metadata=f.metadata)
    for name, value in vars(cls).items():  # methods and properties of the record itself
        if name not in namespace and not name.startswith("__") and callable(getattr(value, "__get__", None)):
            namespace[name] = value
    if "__post_init__" in vars(cls):
        namespace["__post_init__"] = vars(cls)["__post_init__"]
    if cls.__doc__ and "__doc__" in vars(cls) and not cls.__doc__.startswith(cls.__name__ + "("):
        namespace["__doc__"] = cls.__doc__
    return dataclasses.dataclass(frozen=_frozen(cls))(type(cls.__name__, (), namespace))


def _hash(value):
    try:
        return hash(value)
    except TypeError as exc:
        return str(exc)


def _sample(cls, salt: int):
    args = {}
    for f in dataclasses.fields(cls):
        if f.init and f.default_factory is dataclasses.MISSING:
            args[f.name] = f"v{salt}-{f.name}" if f.default is dataclasses.MISSING else f.default
    return args


def test_found_the_records():
    names = {c.__qualname__ for c in CLASSES}
    assert {"Request", "ClientCert", "HttpReply", "Response"} <= names
    assert [c.__qualname__ for c in CLASSES if not _frozen(c)] == ["Response"]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_same_as_frozen_dataclass(cls):
    ref = _reference(cls)
    assert str(inspect.signature(cls)) == str(inspect.signature(ref))
    assert cls.__doc__ == ref.__doc__
    assert cls.__match_args__ == ref.__match_args__
    assert [(f.name, f.type, f.default, f.repr, f.compare, f.hash, f.init) for f in dataclasses.fields(cls)] == [
        (f.name, f.type, f.default, f.repr, f.compare, f.hash, f.init) for f in dataclasses.fields(ref)]
    if "__post_init__" in vars(cls):
        return  # computes fields from real values (Signer): covered by its own tests
    for salt in (1, 2):
        args = _sample(cls, salt)
        ours, theirs = cls(**args), ref(**args)
        assert repr(ours) == repr(theirs)
        if not _frozen(cls):
            assert ours.__hash__ is None and theirs.__hash__ is None
            assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
            assert dataclasses.replace(ours) == ours and dataclasses.replace(ours) is not ours
            for f in dataclasses.fields(cls):  # assignable, as in the dataclass
                setattr(ours, f.name, 1)
                assert getattr(ours, f.name) == 1
            continue
        assert _hash(ours) == _hash(theirs)  # or the same error (a dict field: Enforcement)
        assert ours == cls(**args) and not ours != cls(**args)
        assert ours != cls(**_sample(cls, salt + 10)) or all(
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            for f in dataclasses.fields(cls) if f.init)
        assert (ours == theirs) is False  # another class, as between two dataclasses
        assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
        assert dataclasses.replace(ours) == ours
        for f in dataclasses.fields(cls):
            with pytest.raises(dataclasses.FrozenInstanceError) as mine:
                setattr(ours, f.name, 1)
            with pytest.raises(dataclasses.FrozenInstanceError) as ref_exc:
                setattr(theirs, f.name, 1)
            assert str(mine.value) == str(ref_exc.value)
            with pytest.raises(dataclasses.FrozenInstanceError) as mine:
                delattr(ours, f.name)
            with pytest.raises(dataclasses.FrozenInstanceError) as ref_exc:
                delattr(theirs, f.name)
            assert str(mine.value) == str(ref_exc.value)
        with pytest.raises(dataclasses.FrozenInstanceError):
            ours.not_a_field = 1


def test_init_that_does_not_match_the_fields_is_refused():
    with pytest.raises(TypeError, match="does not match"):
        @record.frozen
        class Wrong:
            a: str
            b: int = 1

            def __init__(self, a: str, b: int = 2):
                pass

    with pytest.raises(TypeError, match="does not match"):
        @record.frozen
        class Swapped:
            a: str
            b: str

            def __init__(self, b: str, a: str):
                pass


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_init_argument_lands_in_its_own_field(cls):
    # Found by review: _sample passes the defaults unchanged, so two defaulted fields swapped in a
    # written-out __init__ (first_used_at/last_used_at, Rules.strict/require_device_user) went
    # unnoticed. Here every argument is a distinct object, defaults included, and each must be
    # found in the field of its name.
    if "__post_init__" in vars(cls):
        return  # computes fields from real values (Signer): covered by its own tests
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    sentinels = {name: object() for name in names}
    by_keyword, by_position = cls(**sentinels), cls(*sentinels.values())
    for name in names:
        assert getattr(by_keyword, name) is sentinels[name], name
        assert getattr(by_position, name) is sentinels[name], name


def test_a_factory_default_is_a_new_object_each_time():
    from devicegate.alb import Response

    first, second = Response(200), Response(200)
    assert first.headers == {} and first.headers is not second.headers
    assert repr(record.FACTORY) == "<factory>"
    given = {"x": "1"}
    assert Response(200, headers=given).headers is given


def test_mutable_default_is_refused_as_dataclass_refuses_it():
    with pytest.raises(ValueError, match="mutable default"):
        @record.frozen
        class Listy:
            a: list = []  # noqa: RUF012

            def __init__(self, a: list = []):  # noqa: B006
                pass


def test_what_is_not_worked_out_here_goes_to_dataclass():
    """A base with dataclass fields (or a ClassVar annotation) is left to dataclass's own field collection."""
    @dataclasses.dataclass
    class Base:
        a: str

    @record.frozen
    class Child(Base):
        b: str

        def __init__(self, a: str, b: str):
            self.__dict__.update(a=a, b=b)

    assert [f.name for f in dataclasses.fields(Child)] == ["a", "b"]
    assert Child.__doc__ == "Child(a: 'str', b: 'str')"
    assert Child("x", "y") == Child("x", "y") and repr(Child("x", "y")).endswith("Child(a='x', b='y')")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Child("x", "y").b = "z"


@pytest.mark.skipif(not hasattr(__import__("copy"), "replace"), reason="copy.replace is Python 3.13+")
def test_copy_replace_as_for_a_dataclass():
    import copy

    from devicegate.alb import Response

    assert copy.replace(Response(200, "a"), body="b") == Response(200, "b")


NAMED_TUPLES = _records(lambda cls: issubclass(cls, tuple))


def test_found_the_named_tuples():
    assert {"ReplyTo", "PkiMessage", "OpenedEnvelope", "CertRep", "CsrFacts", "CertificateAuthority",
            "SigningKey"} <= {c.__qualname__ for c in NAMED_TUPLES}


@pytest.mark.parametrize("cls", NAMED_TUPLES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_same_as_typing_named_tuple(cls):
    import pickle
    import types
    import typing

    annotations = dict(cls.__annotations__)
    namespace = {"__annotations__": annotations, "__module__": cls.__module__, **cls._field_defaults}
    if "__doc__" in vars(cls) and not vars(cls)["__doc__"].startswith(cls.__name__ + "("):
        namespace["__doc__"] = vars(cls)["__doc__"]
    ref = types.new_class(cls.__name__, (typing.NamedTuple,), exec_body=lambda ns: ns.update(namespace))
    assert cls._fields == ref._fields and cls.__match_args__ == ref.__match_args__
    assert cls._field_defaults == ref._field_defaults
    # (typing turns the annotations into ForwardRefs; ours stay the strings they are written as)
    assert [(p.name, p.default, p.kind) for p in inspect.signature(cls).parameters.values()] == [
        (p.name, p.default, p.kind) for p in inspect.signature(ref).parameters.values()]
    if "__doc__" not in namespace:
        assert cls.__doc__ == ref.__doc__
    values = [f"v-{name}" for name in cls._fields]
    ours, theirs = cls(*values), ref(*values)
    assert isinstance(ours, tuple) and ours == tuple(values) == theirs and hash(ours) == hash(theirs)
    assert repr(ours) == repr(theirs) and ours._asdict() == theirs._asdict()
    assert [getattr(ours, n) for n in cls._fields] == values
    assert cls(**dict(zip(cls._fields, values))) == ours
    assert ours._replace(**{cls._fields[0]: "x"}) == theirs._replace(**{cls._fields[0]: "x"})
    assert type(ours._replace()) is cls and type(cls._make(values)) is cls
    with pytest.raises(ValueError, match="unexpected field names"):
        ours._replace(nope=1)
    with pytest.raises(TypeError, match=f"Expected {len(values)} arguments"):
        cls._make(values[:-1])
    with pytest.raises(AttributeError):
        setattr(ours, cls._fields[0], "y")
    with pytest.raises(AttributeError):
        ours.not_a_field = 1
    assert pickle.loads(pickle.dumps(ours)) == ours
    required = [n for n in cls._fields if n not in cls._field_defaults]
    with pytest.raises(TypeError):
        cls(*values[:len(required) - 1])


def test_named_tuple_needs_a_matching_new():
    with pytest.raises(TypeError, match="@named_tuple needs"):
        @record.named_tuple
        class Swapped(tuple):
            __slots__ = ()
            a: str
            b: str

            def __new__(cls, b: str, a: str):
                return tuple.__new__(cls, (a, b))

    with pytest.raises(TypeError, match="@named_tuple needs"):
        @record.named_tuple
        class NoSlots(tuple):
            a: str

            def __new__(cls, a: str):
                return tuple.__new__(cls, (a,))
