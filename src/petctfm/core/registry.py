"""The method registry: every method plugs into petctfm through ONE :class:`Method` record, found by name.

A method (a self-supervised pretraining such as an MAE, a fine-tuning recipe, a promptable segmenter) is a
:class:`Method`: its name, the kinds of checkpoint it writes (:class:`ModelKind`: the string a checkpoint's
config stores under ``"method"`` and the builder that rebuilds the model from that config), its typed config
and presets, its pretraining entry point and command-line options, how a run of it is fine-tuned for lesion
segmentation, the encoder adapters its networks need, and its hooks for the generic probe and staging.

Generic code (``train``, ``inference``, ``predict``, the probe, staging, the CLI) asks the registry and never
names a method: :func:`model_kind` for a checkpoint's builder, :func:`owner_of` for the method that wrote a
checkpoint, :func:`kinds_with_role` for "every whole-volume lesion segmenter", :func:`pretraining_methods` for
``petctfm pretrain --method``.

Where records come from, the same way for petctfm's own methods and for third-party ones:

1. **entry points** in the group ``petctfm.methods`` (:data:`ENTRY_POINT_GROUP`) of any installed
   distribution, each naming a :class:`Method` (or a callable returning one). petctfm's built-in methods are
   declared there too, in its ``pyproject.toml``. Loaded once, on first use; a plugin that fails to import is
   skipped with one logged warning naming it (a broken plugin never breaks petctfm);
2. :func:`register_method` calls (a notebook, a test, a package that prefers code to metadata).

Only this module knows where records come from; ``docs/architecture.md`` ("Adding a method") says what a
method's package writes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from petctfm.core.errors import InputError, UsageError

log = logging.getLogger(__name__)

#: The entry-point group every method (built-in or third-party) is declared in.
ENTRY_POINT_GROUP = "petctfm.methods"

#: What a checkpoint kind is for. ``pretrained``: an encoder to reuse (fine-tuning, probe, staging);
#: ``segmenter``: a whole-volume lesion segmenter, ``forward(x (B, C, X, Y, Z)) -> (B, 2, X, Y, Z)`` logits
#: (``petctfm predict``, ``finetune --predict``); ``interactive``: a segmenter driven by clicks / boxes;
#: ``other``: none of these.
ROLES = ("pretrained", "segmenter", "interactive", "other")


@dataclass(frozen=True)
class ModelKind:
    """One kind of checkpoint a method writes.

    ``key``: the string the run's config stores under ``"method"`` (also inside every safetensors checkpoint);
    ``build(config dict) -> nn.Module``: the untrained model of that config (``load_model`` then loads the
    weights); ``role``: one of :data:`ROLES`.
    """

    key: str
    build: Callable[[dict[str, Any]], Any]
    role: str = "other"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"ModelKind {self.key!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")


@dataclass(frozen=True)
class Option:
    """One command-line option of a method's pretraining (``petctfm pretrain --method NAME --flag V``), as data
    (the CLI turns it into argparse): the flag, the keyword argument of :attr:`Method.pretrain` it fills, its
    type (``int``, ``float``, ``str`` or ``bool`` for ``--flag/--no-flag``), allowed values and help text.
    Several methods may declare the same flag; they must agree on ``dest`` and ``type``."""

    flag: str
    dest: str
    type: type = str
    choices: tuple[Any, ...] | None = None
    help: str = ""
    metavar: str | None = None


@dataclass(frozen=True)
class Method:
    """Everything petctfm needs to know about one method (see the module docstring).

    - ``name``: what users type (``petctfm pretrain --method NAME``), lower case with dashes.
    - ``summary``: one line for ``--help``; ``examples``: command lines for ``petctfm pretrain --help``
      (comment lines start with ``#``), or "".
    - ``kinds``: the checkpoint kinds it writes (:class:`ModelKind`), at least one.
    - ``config``: its typed config class (a dataclass with ``to_dict()``), or a function returning it (so
      the record imports nothing heavy); ``presets``: ``name -> {"task", "train"}`` (``tiny`` / ``cpu`` /
      ``gpu``), or a function returning that table; either may be None. :meth:`config_type` and
      :meth:`default_config` resolve them (``petctfm pretrain --method NAME --show-config``).
    - ``pretrain(dataset, out, preset=None, *, max_steps=None, max_time=None, resume=False, overrides=None,
      **options) -> summary dict``: its pretraining entry point, or None (not a pretraining method);
      ``options``: its command-line options (:class:`Option`), passed to ``pretrain`` by ``dest``.
    - ``finetune(dataset, out, init, preset=None, fraction=None, *, kshot=None, backbone=None, max_steps=None,
      max_time=None, resume=False, overrides=None, **config) -> summary dict``: how a run of this method (or
      a fine-tuning run it wrote) is fine-tuned for lesion segmentation; None: it cannot be.
    - ``backbones(name) -> bool``: whether ``finetune --init scratch --backbone NAME`` is this method's (a
      network from scratch); None: no backbone is.
    - ``encoders``: network class name -> encoder adapter (:class:`petctfm.models.encoders.Encoder`) for the
      networks this method brings; :func:`petctfm.models.encoders.get_encoder` finds them here.
    - ``encoder_record(config) -> dict``: what a pretraining run's encoder needs beyond patch, spacing and
      normalization to read a case the way it was trained (e.g. a whole-body stack geometry); recorded by the
      probe and staging and compared between encoders used together. None: nothing.
    - ``case_features(encoder, image (2, X, Y, Z) raw [SUV, HU] numpy, device) -> feature maps finest first,
      each (1, C_s, ...)``: how staging reads one whole case with this method's encoder; None: the generic
      tiling of the body into pretraining patches.
    - ``order``: where it is listed (lowest first, then by name); the first pretraining method is the default
      of ``petctfm pretrain``.
    """

    name: str
    summary: str
    kinds: tuple[ModelKind, ...]
    config: type | Callable[[], type] | None = None
    presets: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
    pretrain: Callable[..., dict[str, Any]] | None = None
    options: tuple[Option, ...] = ()
    finetune: Callable[..., dict[str, Any]] | None = None
    backbones: Callable[[str], bool] | None = None
    encoders: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    encoder_record: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    case_features: Callable[..., list[Any]] | None = None
    order: int = 100
    examples: str = ""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or " " in self.name:
            raise ValueError(f"Method name must be a non-empty word, got {self.name!r}")
        if not self.kinds:
            raise ValueError(f"Method {self.name!r} declares no checkpoint kind (kinds=...)")

    def kind(self, key: str) -> ModelKind:
        return next(k for k in self.kinds if k.key == key)

    def config_type(self) -> type | None:
        """The typed config class (:attr:`config` resolved)."""
        c = self.config
        return c if c is None or isinstance(c, type) else c()

    def preset_table(self) -> Mapping[str, Any]:
        """``{preset name: {"task": ..., "train": ...}}`` (:attr:`presets` resolved; {} without presets)."""
        p = self.presets
        return {} if p is None else (p if isinstance(p, Mapping) else p())

    def default_config(self, preset: str | None = None) -> dict[str, Any]:
        """``{"task": the task config as a dict, "train": the preset's trainer settings}``: the config class's
        defaults with the preset's task part merged in (``preset`` None: no preset). UsageError for a preset
        the method does not have; ``{}`` task for a method without a config class."""
        from petctfm.core.config import deep_merge

        cls = self.config_type()
        task = cls().to_dict() if cls is not None else {}
        table = self.preset_table()
        if preset is None:
            return {"task": task, "train": {}}
        if preset not in table:
            raise UsageError(f"preset={preset!r}: method {self.name} has presets {', '.join(table) or 'none'}",
                             arg="preset")
        return {"task": deep_merge(task, table[preset].get("task") or {}), "train": dict(table[preset].get("train") or {})}


class _Registry:
    """The records, by method name and by checkpoint kind; entry points loaded once, lazily, thread-safe."""

    def __init__(self) -> None:
        self.methods: dict[str, Method] = {}
        self.kinds: dict[str, tuple[ModelKind, Method]] = {}
        self.loaded = False
        self.lock = threading.RLock()

    def add(self, method: Method, replace: bool = False) -> None:
        with self.lock:
            old = self.methods.get(method.name)
            if old is not None and not replace:
                if old is method:
                    return
                raise ValueError(f"a method named {method.name!r} is already registered; pass replace=True")
            if old is not None:
                self.remove(method.name)
            for k in method.kinds:
                other = self.kinds.get(k.key)
                if other is not None and other[1].name != method.name:
                    raise ValueError(f"checkpoint kind {k.key!r} of method {method.name!r} is already method "
                                     f"{other[1].name!r}'s")
            self.methods[method.name] = method
            for k in method.kinds:
                self.kinds[k.key] = (k, method)

    def remove(self, name: str) -> Method | None:
        with self.lock:
            method = self.methods.pop(name, None)
            if method is not None:
                for k in method.kinds:
                    self.kinds.pop(k.key, None)
            return method

    def load_entry_points(self) -> None:
        with self.lock:
            if self.loaded:
                return
            self.loaded = True  # first: a plugin that looks itself up while loading must not recurse
            from importlib.metadata import entry_points

            seen: set[str] = set()
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.value in seen:  # the same distribution found twice on sys.path (editable + build dir)
                    continue
                seen.add(ep.value)
                try:
                    obj = ep.load()
                    method = obj if isinstance(obj, Method) else obj()
                    if not isinstance(method, Method):
                        raise TypeError(f"{ep.value} is a {type(method).__name__}, not a petctfm Method")
                    if method.name not in self.methods:
                        self.add(method)
                except Exception as exc:  # noqa: BLE001 - a broken plugin is skipped, never fatal
                    log.warning("petctfm method plugin %r (%s) skipped: %s: %s", ep.name, ep.value,
                                type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")


_REGISTRY = _Registry()


def _loaded() -> _Registry:
    if not _REGISTRY.loaded:
        _REGISTRY.load_entry_points()
    return _REGISTRY


def register_method(method: Method, replace: bool = False) -> Method:
    """Register ``method`` (a :class:`Method`); returns it. A second method of the same name, or one claiming
    another method's checkpoint kind, is a ``ValueError`` unless ``replace``."""
    if not isinstance(method, Method):
        raise TypeError(f"register_method takes a petctfm Method, got {type(method).__name__}")
    _loaded().add(method, replace=replace)
    return method


def rescan() -> list[str]:
    """Scan the ``petctfm.methods`` entry points again (a plugin installed into a running process, a notebook);
    returns the names of the methods it added. Methods already registered are kept."""
    before = set(_loaded().methods)
    with _REGISTRY.lock:
        _REGISTRY.loaded = False
        _REGISTRY.load_entry_points()
        return [n for n in _REGISTRY.methods if n not in before]



def unregister_method(name: str) -> Method | None:
    """Remove the method ``name`` (tests, notebooks); returns its record, or None."""
    return _loaded().remove(name)


def methods() -> list[Method]:
    """Every registered method, by :attr:`Method.order`, then name."""
    return sorted(_loaded().methods.values(), key=lambda m: (m.order, m.name))


def method_names() -> list[str]:
    return [m.name for m in methods()]


def get_method(name: str) -> Method:
    """The method called ``name``; a :class:`UsageError` naming the known ones otherwise."""
    reg = _loaded()
    if name not in reg.methods:
        if not reg.methods:
            raise InputError(MISSING_HINT)
        known = ", ".join(reg.methods)
        raise UsageError(f"method={name!r}: no such method (known: {known})", arg="method")
    return reg.methods[name]


def model_kind(key: str | None, where: object = "config") -> ModelKind:
    """The :class:`ModelKind` a checkpoint config's ``"method"`` names; one-line :class:`InputError` naming
    ``where`` (the file) and the known kinds otherwise."""
    reg = _loaded()
    if not reg.methods:
        raise InputError(MISSING_HINT)
    if key not in reg.kinds:
        raise InputError(f"{where}: config method {key!r} is not a registered checkpoint kind (known: "
                         f"{', '.join(reg.kinds) or 'none'}; is the plugin that wrote it installed?)")
    return reg.kinds[key][0]


def owner_of(key: str | None, where: object = "config") -> Method:
    """The method that writes checkpoints of kind ``key`` (a config's ``"method"``)."""
    model_kind(key, where)
    return _REGISTRY.kinds[key][1]  # type: ignore[index]


def kinds_with_role(role: str) -> tuple[str, ...]:
    """Every registered checkpoint kind with ``role`` (:data:`ROLES`), e.g. all lesion segmenters."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return tuple(k for k, (kind, _) in _loaded().kinds.items() if kind.role == role)


#: What to do when no method at all is registered: petctfm's own are declared as entry points too, so an
#: empty registry means the installed metadata is stale or missing (a source tree on PYTHONPATH, an old
#: ``*.egg-info``), not that there are no methods.
MISSING_HINT = ("no petctfm method is registered: the 'petctfm.methods' entry points of the installed metadata "
                "are missing or stale (a source tree on PYTHONPATH, an old *.egg-info); reinstall petctfm "
                "(pip install -e .)")


def pretraining_methods() -> list[Method]:
    """The methods with a pretraining entry point (``petctfm pretrain --method``), listing order (the first is
    the default). An empty registry is a one-line :class:`InputError` (:data:`MISSING_HINT`)."""
    if not _loaded().methods:
        raise InputError(MISSING_HINT)
    return [m for m in methods() if m.pretrain is not None]


def backbone_owner(backbone: str) -> Method | None:
    """The method whose fine-tuning builds ``backbone`` from scratch (:attr:`Method.backbones`), or None."""
    return next((m for m in methods() if m.backbones is not None and m.backbones(backbone)), None)


def encoder_adapters() -> dict[str, Callable[[Any], Any]]:
    """Network class name -> encoder adapter, from every method's :attr:`Method.encoders`."""
    out: dict[str, Callable[[Any], Any]] = {}
    for m in methods():
        out.update(m.encoders)
    return out


def options_of(names: Iterable[str] | None = None) -> dict[str, tuple[Option, list[str]]]:
    """Pretraining options by flag: ``{flag: (Option, [names of the methods declaring it])}``, over the
    methods ``names`` (default: every pretraining method). Methods declaring one flag must agree on its
    ``dest`` and ``type`` (a ``ValueError`` otherwise: two plugins clash)."""
    chosen = [get_method(n) for n in names] if names is not None else pretraining_methods()
    out: dict[str, tuple[Option, list[str]]] = {}
    for m in chosen:
        for opt in m.options:
            if opt.flag in out:
                first, who = out[opt.flag]
                if (first.dest, first.type) != (opt.dest, opt.type):
                    raise ValueError(f"option {opt.flag} of method {m.name!r} clashes with method {who[0]!r}'s "
                                     f"(dest/type {opt.dest}/{opt.type.__name__} vs {first.dest}/"
                                     f"{first.type.__name__})")
                who.append(m.name)
            else:
                out[opt.flag] = (opt, [m.name])
    return out


__all__ = ["ENTRY_POINT_GROUP", "ROLES", "ModelKind", "Option", "Method", "register_method", "rescan",
           "unregister_method",
           "methods", "method_names", "get_method", "model_kind", "owner_of", "kinds_with_role",
           "pretraining_methods", "backbone_owner", "encoder_adapters", "options_of"]
