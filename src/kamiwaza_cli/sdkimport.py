"""Importing kamiwaza_sdk without importing openai (or the SDK's unused services) until first use.

The SDK imports ``openai`` when it is imported (kamiwaza_sdk/services/openai.py: ``from openai
import OpenAI``), and every service module with its pydantic schemas: ~2/3 of its import time, paid
by every command, though only ``run`` streams and the CLI calls three services (models, serving,
auth). ``install()`` puts a finder first on ``sys.meta_path``. While the package ``kamiwaza_sdk``
executes (the *window*), an import of a deferred module (openai and its submodules; the SDK's
services but USED_SERVICES; SDK_DEFERRED) gives a stand-in module, and every class taken from one
(``from openai import OpenAI``, ``openai.OpenAI`` at module level: a CamelCase name) is a stand-in
class; taking anything else (a constant, a function: values that may be handed to code nobody can
intercept) imports the module for real on the spot. When the window closes, every reference to a
stand-in is found (``gc.get_referrers``):

- if they are all dict entries (a module's globals, a function's ``__annotations__``), the deferred
  modules stay unimported; the entries are rebound to the real objects as soon as the module is
  imported, by anyone (the finder wraps its import) or by the first use of a stand-in (a call, an
  attribute, ``isinstance``, a subclass, ``[]``, ``|``), which then acts on the real object. The
  SDK's client builds a service on first use of its attribute (``client.openai``), so that first
  use is what imports it, and openai with it.
- otherwise (a stand-in kept in a tuple, a default argument, a typing alias: places that cannot be
  rebound), or if the SDK's import fails with stand-ins, the SDK's modules are dropped and executed
  again with nothing deferred: the cost and behaviour of a plain import.

A stand-in used during the window itself (a base class, a pydantic field) imports the real module
there and then. A stand-in derives from BaseException, so an ``except Name:`` met before its module
is imported is legal and matches nothing: right for a class the deferred module defines, as no
instance of it can exist yet (a name a deferred module merely re-exports from elsewhere would not
match: openai's exceptions are its own, and the SDK's client takes only service classes from its
service modules). Imports happen on the CLI's one thread; the window is not meant for threads.

Which modules are deferred is a tuning table; correctness does not depend on it: a new SDK release
that imports openai or its services differently is deferred the same way, imported for real where it
uses them at import time, or imported plainly. tests/test_sdkimport.py checks that ``list`` and
``ps`` leave openai unimported and that the chat path streams, against the lowest and newest SDK
that pyproject.toml allows (scripts/test_sdk_range.sh), and the fallbacks with fake SDK packages.
"""

from __future__ import annotations

import gc
import importlib
import importlib.machinery
import sys
import types
from collections.abc import Callable
from typing import Any

SDK = "kamiwaza_sdk"
DEFERRED = "openai"
# The SDK's services the CLI uses (platform/sdk.py); the others are deferred like openai: the
# client builds a service only when its attribute is first read.
SDK_SERVICES = SDK + ".services"
USED_SERVICES = frozenset({"models", "serving", "auth", "base_service"})
# Modules the package's __init__ imports for re-exports the CLI never uses.
SDK_DEFERRED = (SDK + ".job_runtime", SDK + ".shared_idp_authentication", SDK + ".schemas.delegated_jobs")

_stubbing = False  # the SDK's package is executing: deferred imports give stand-ins
_live: set[str] = set()  # deferred roots imported for real during the window
_stubs: dict[str, types.ModuleType] = {}
_proxies: dict[tuple[str, str], type] = {}
_bindings: list[tuple[dict[Any, Any], Any, object]] = []  # (dict, key, stand-in) to rebind
_state = {"deferred": False, "fell_back": False}


def install() -> None:
    """Put the finder first on sys.meta_path (idempotent); imports after this are affected."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def openai_deferred() -> bool:
    """True when the SDK's import deferred openai and openai is not imported (yet)."""
    return _state["deferred"] and not _real_loaded()


def fell_back() -> bool:
    """True when the SDK's import could not defer safely and was done plainly."""
    return _state["fell_back"]


def _root(name: str) -> str | None:
    """The deferred module ``name`` belongs to (openai, one SDK service, ...), if any."""
    for root in (DEFERRED, *SDK_DEFERRED):
        if name == root or name.startswith(root + "."):
            return root
    parts = name.split(".")
    if name.startswith(SDK_SERVICES + ".") and parts[2] not in USED_SERVICES:
        return ".".join(parts[:3])
    return None


def _real_loaded(root: str = DEFERRED) -> bool:
    module = sys.modules.get(root)
    return module is not None and not isinstance(module, _Stub)


class _Stub(types.ModuleType):
    """A stand-in for a deferred module, in sys.modules only during the window."""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if _stubbing and _class_name(attr):
            return _proxy(name, attr)
        _load_real(_root(name) or name)
        return _target(importlib.import_module(name), name, attr)


def _class_name(attr: str) -> bool:
    """Only classes get stand-ins (by their CamelCase name): code calls a class, reads its attributes
    or checks instances with it, which a stand-in forwards. A constant, a function or a submodule may
    be handed around as a plain value (``timeout=DEFAULT_TIMEOUT``), which a stand-in cannot be, so
    taking one imports its module at once."""
    return attr[:1].isupper() and not attr.isupper()


class _DeferredMeta(type):
    """The type of stand-in names: every use acts on the real object, importing its module first."""

    _kw_origin: tuple[str, str]

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Any:
        if "_kw_origin" in ns:
            return super().__new__(mcls, name, bases, ns, **kw)
        # ``class Mine(Deferred):``: derive from the real class instead.
        real = tuple(_resolve(b) if isinstance(b, _DeferredMeta) else b for b in bases)
        return types.new_class(name, real, kw, lambda body: body.update(ns))

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _resolve(cls)(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        return getattr(_resolve(cls), attr)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _resolve(cls))

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _resolve(cls))

    def __getitem__(cls, item: Any) -> Any:
        return _resolve(cls)[item]

    def __or__(cls, other: Any) -> Any:
        return _resolve(cls) | other

    def __ror__(cls, other: Any) -> Any:
        return other | _resolve(cls)

    def __repr__(cls) -> str:
        module, attr = cls._kw_origin
        return f"<deferred {module}.{attr}>"


def _proxy(module: str, attr: str) -> type:
    key = (module, attr)
    if key not in _proxies:
        ns = {"_kw_origin": key, "__slots__": (), "__module__": __name__, "__qualname__": attr}
        _proxies[key] = _DeferredMeta(attr, (BaseException,), ns)
    return _proxies[key]


def _target(module: types.ModuleType, name: str, attr: str) -> Any:
    try:
        return getattr(module, attr)
    except AttributeError:
        return importlib.import_module(f"{name}.{attr}")  # ``from openai import types``


def _origin(obj: object) -> str:
    return obj.__name__ if isinstance(obj, _Stub) else obj._kw_origin[0]  # type: ignore[attr-defined]


def _real_of(obj: object) -> Any:
    if isinstance(obj, _Stub):
        return importlib.import_module(obj.__name__)
    module, attr = obj._kw_origin  # type: ignore[attr-defined]
    return _target(importlib.import_module(module), module, attr)


def _resolve(obj: object) -> Any:
    _load_real(_root(_origin(obj)) or _origin(obj))
    return _real_of(obj)


def _unstub(root: str | None = None) -> None:
    """Take the stand-ins (of one root, or all) out of sys.modules."""
    for name, stub in _stubs.items():
        if sys.modules.get(name) is stub and (root is None or _root(name) == root):
            del sys.modules[name]


def _end_stubbing() -> None:
    global _stubbing
    _stubbing = False
    _unstub()


def _load_real(root: str) -> None:
    """Import one deferred module for real (once) and rebind what held its stand-ins."""
    if _stubbing:  # used during the SDK's own import: this root is imported for real from now on
        _live.add(root)
    _unstub(root)
    if not _real_loaded(root):
        importlib.import_module(root)  # through _Finder: rebinds when it is executed
    _rebind(root)


def _rebind(root: str) -> None:
    pending = [b for b in _bindings if _root(_origin(b[2])) == root]
    _bindings[:] = [b for b in _bindings if _root(_origin(b[2])) != root]
    for holder, key, obj in pending:
        if holder.get(key) is obj:
            holder[key] = _real_of(obj)


class _StubLoader:
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        stub = _Stub(spec.name)
        stub.__path__ = []  # a package: ``import openai.types.chat`` finds stand-ins too
        _stubs[spec.name] = stub
        return stub

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _Wrapped:
    """The real loader, with something done around its execution; the module keeps the real loader."""

    def __init__(self, loader: Any, run: Callable[[Any, types.ModuleType], None]) -> None:
        self.loader = loader
        self.run = run

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        create = getattr(self.loader, "create_module", None)
        return create(spec) if create else None

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        module.__loader__ = self.loader
        self.run(self.loader, module)


class _Finder:
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == SDK:
            return self._wrap(fullname, path, target, _exec_sdk)
        root = _root(fullname)
        if root is None:
            return None
        if _stubbing and root not in _live:
            # Loaders are duck-typed; importlib.abc costs ~20 ms of start-up.
            return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)  # type: ignore[arg-type]
        if fullname == root and any(_root(_origin(b[2])) == root for b in _bindings):
            return self._wrap(fullname, path, target, _exec_deferred)
        return None

    def _wrap(
        self, fullname: str, path: Any, target: Any, run: Callable[[Any, types.ModuleType], None]
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Wrapped(spec.loader, run)
                return spec  # type: ignore[no-any-return]
        return None


def _exec_deferred(loader: Any, module: types.ModuleType) -> None:
    loader.exec_module(module)
    _rebind(module.__name__)


def _exec_sdk(loader: Any, module: types.ModuleType) -> None:
    global _stubbing
    if _real_loaded():
        loader.exec_module(module)
        return
    _stubbing = True
    try:
        loader.exec_module(module)
    except Exception:
        _end_stubbing()
        _fall_back(loader, module)
        return
    _end_stubbing()
    if not _close():
        _fall_back(loader, module)


def _close() -> bool:
    """Find every reference to a stand-in; True if all of them can be rebound (dict entries)."""
    ours: list[object] = [*_proxies.values(), *_stubs.values()]
    if not ours:
        return True
    ids = {id(o) for o in ours}
    internal = {id(_proxies), id(_stubs), id(ours)} | {id(p.__mro__) for p in _proxies.values()}
    holders: list[dict[Any, Any]] = []
    others: list[object] = []
    for ref in gc.get_referrers(*ours):
        if id(ref) in internal:
            continue
        if isinstance(ref, tuple) and len(ref) == len(ours) and all(a is b for a, b in zip(ref, ours, strict=True)):
            continue  # get_referrers' own argument tuple
        if isinstance(ref, dict):
            holders.append(ref)
        elif _annotation_pairs(ref):
            others.append(ref)
        else:
            return False
    if others:
        # A function keeps its annotations as a (name, value, ...) tuple until they are first read:
        # reading them makes the dict, which can be rebound.
        functions = [f for f in gc.get_referrers(*others) if isinstance(f, types.FunctionType)]
        if len(functions) != len(others):
            return False
        for function in functions:
            annotations = function.__annotations__
            holders.append(annotations)
    for holder in holders:
        _bindings.extend((holder, key, value) for key, value in holder.items() if id(value) in ids)
    for root in _live:  # used during the import itself: already imported for real
        _rebind(root)
    _state["deferred"] = not _real_loaded()
    return True


def _annotation_pairs(ref: object) -> bool:
    return isinstance(ref, tuple) and len(ref) % 2 == 0 and all(isinstance(k, str) for k in ref[::2])


def _fall_back(loader: Any, module: types.ModuleType) -> None:
    """Drop what the window imported from the SDK and run the package again with nothing deferred."""
    _state["fell_back"] = True
    _state["deferred"] = False
    _bindings.clear()
    ids = {id(o) for o in [*_proxies.values(), *_stubs.values()]}

    def holds(module: object) -> bool:
        for value in getattr(module, "__dict__", {}).values():
            if id(value) in ids or (isinstance(value, (tuple, list)) and any(id(v) in ids for v in value)):
                return True
        return False

    # The SDK's modules, and any other module that kept a stand-in, are executed again.
    for name in [n for n, m in list(sys.modules.items()) if n.startswith(SDK + ".") or holds(m)]:
        del sys.modules[name]
    _live.update(filter(None, map(_root, _stubs)))
    loader.exec_module(module)
