"""Restricted loading of NVlabs EDM snapshot pickles: tensors and configs only, no code execution.

An EDM ``.pkl`` stores every network class as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
where ``meta['module_src']`` is Python source that EDM's own loader ``exec``s. This unpickler never
runs it: the allow-list below maps the handful of globals an EDM snapshot references to inert
replacements (a stub record per persistent object), then the EMA network's state dict and its
``_init_kwargs`` are read from those stubs and loaded into ``amed.models.edm``'s adapter around the
clean-room network of ``amed.models.edm_networks``.
Any other global is refused before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from .edm import EDMDenoiser
from .._io import open_regular
from ..errors import AmedValueError, RefusedPickle

__all__ = ["PersistentStub", "RestrictedUnpickler", "read_edm_pickle", "stub_state_dict", "load_edm_pickle"]


class PersistentStub:
    """What a persistent EDM object (or a ModuleDict) becomes: its class name and its ``__dict__``."""

    def __init__(self, class_name: str = "ModuleDict", state: dict | None = None):
        self.class_name = class_name
        self.state = state if state is not None else {}

    def __setstate__(self, state):  # BUILD of a pickled torch.nn.ModuleDict
        if not isinstance(state, dict):
            raise RefusedPickle(f"unexpected {self.class_name} state of type {type(state).__name__}")
        self.state = state

    def __repr__(self):
        return f"PersistentStub({self.class_name!r})"


def _reconstruct_persistent_obj(meta):
    """Stand-in for EDM's reconstructor: check the record, keep class name and state, ignore module_src."""
    if not isinstance(meta, dict):
        raise RefusedPickle(f"persistent object record must be a dict, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise RefusedPickle(f"unsupported persistent object type {meta.get('type')!r} (expected 'class')")
    if meta.get("version") != 6:
        raise RefusedPickle(f"unsupported EDM persistence version {meta.get('version')!r} (expected 6)")
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise RefusedPickle("persistent object record lacks a class_name string or a state dict")
    return PersistentStub(class_name, state)  # module_src is deliberately never looked at


class _ModuleDictStub(PersistentStub):
    def __init__(self):
        super().__init__("ModuleDict", {})


def _numpy_scalar(dtype, data=None):
    """Decode numpy's pickled scalar (dtype, raw bytes) into a Python number."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise RefusedPickle(f"refusing numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


def _load_from_bytes(data):
    """One legacy-format storage, read by torch's own weights-only unpickler."""
    if not isinstance(data, (bytes, bytearray)):
        raise RefusedPickle("storage payload is not bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch.nn.modules.container", "ModuleDict"): _ModuleDictStub,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals of an EDM snapshot (checkpoints.md Sec. 1.4)."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refusing to load global {module}.{name}: not one of the globals an EDM snapshot uses "
                "(nothing from the file was executed)"
            ) from None

    def persistent_load(self, pid):
        raise RefusedPickle(f"refusing persistent id {pid!r}: EDM snapshots have none")


def read_edm_pickle(path) -> dict:
    """Unpickle an EDM snapshot with the restricted unpickler; returns the top-level dict of stubs."""
    path = Path(path)
    with open_regular(path, "EDM snapshot") as f:
        try:
            data = RestrictedUnpickler(f).load()
        except pickle.UnpicklingError as exc:
            raise RefusedPickle(f"{path}: {exc}") from exc
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError, OverflowError,
                struct.error) as exc:
            raise RefusedPickle(f"{path}: not a readable EDM snapshot ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise AmedValueError(f"{path}: an EDM snapshot is a dict, got {type(data).__name__}")
    return data


def stub_state_dict(stub: PersistentStub, prefix: str = "") -> collections.OrderedDict:
    """Rebuild ``state_dict()`` of a stubbed module: parameters, persistent buffers, then children."""
    out = collections.OrderedDict()
    _walk(stub, prefix, out)
    return out


def _walk(stub, prefix, out):
    if not isinstance(stub, PersistentStub):
        raise AmedValueError(f"expected a module at {prefix or '<root>'!r}, got {type(stub).__name__}")
    state = stub.state
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk(child, prefix + name + ".", out)


def load_edm_pickle(path, *, name: str | None = None, source: str = "", license: str = "",
                    sha256: str | None = None) -> EDMDenoiser:
    """Load the ``ema`` network of an EDM snapshot into the clean-room ``EDMDenoiser`` (strict keys/shapes)."""
    path = Path(path)
    data = read_edm_pickle(path)
    if "ema" not in data:
        raise AmedValueError(f"{path}: EDM snapshot has no 'ema' entry (keys: {sorted(map(str, data))})")
    ema = data["ema"]
    if not isinstance(ema, PersistentStub) or ema.class_name != "EDMPrecond":
        got = ema.class_name if isinstance(ema, PersistentStub) else type(ema).__name__
        raise AmedValueError(f"{path}: 'ema' is {got!r}; only EDMPrecond snapshots (edm-*.pkl) are supported")
    init_kwargs = ema.state.get("_init_kwargs")
    if not isinstance(init_kwargs, dict):
        raise AmedValueError(f"{path}: the EDMPrecond record has no _init_kwargs dict")
    config = dict(init_kwargs)
    for key in ("sigma_data",):  # plain attributes override constructor defaults
        if key in ema.state and key not in config:
            config[key] = ema.state[key]
    model = ema.state.get("_modules", {}).get("model")
    model_type = config.get("model_type", "DhariwalUNet")
    if isinstance(model, PersistentStub) and model.class_name != model_type:
        raise AmedValueError(f"{path}: _init_kwargs says model_type {model_type!r} but the network is {model.class_name!r}")
    state = stub_state_dict(ema)

    with torch.device("meta"):
        net = EDMDenoiser(config, name=name or path.stem, source=source or str(path), license=license,
                          sha256=sha256)
    load_state_dict_checked(net, state, str(path))
    return net.eval().requires_grad_(False)


def load_state_dict_checked(module: torch.nn.Module, state: dict, what: str) -> None:
    """``load_state_dict(strict=True, assign=True)`` into a meta-built module, naming any mismatched key."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise AmedValueError(f"{what}: state dict does not match the network: missing keys {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    fixed = {}
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise AmedValueError(f"{what}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(ref.shape):
            raise AmedValueError(f"{what}: shape mismatch for {key!r}: file has {tuple(value.shape)}, "
                             f"network expects {tuple(ref.shape)}")
        fixed[key] = value.to(torch.float32) if value.is_floating_point() else value
    module.load_state_dict(fixed, strict=True, assign=True)
    leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftover:
        raise AmedValueError(f"{what}: tensors left uninitialised after loading: {leftover[:5]}")
