"""Lowering: a refq :class:`~refq.graph.Graph` under a profile to a C program description.

:func:`lower_graph` prepares the graph exactly as the NumPy reference does
(``refq.graph.Program(graph, profile).steps``: the same params objects, so C and NumPy share one
source of truth), then walks the nodes in order and asks each op's *lowering* for:

* constants (``ctx.const``): weights arranged for the kernel, kernel sums, multipliers, shifts,
  tables; emitted by weights.c as ``REFQ_ALIGN(16) const`` arrays, identical arrays shared;
* the kernel call (``ctx.call``): the C function ``refq_<op>_<dtype>``, the initializer of its
  ``static const`` params struct, its tensor arguments and the scratch bytes it needs;
* or an alias (``ctx.alias``): RESHAPE's output is its input's memory, no copy.

Then every non-constant tensor gets a place: graph inputs, outputs and intermediates share one
arena planned by :mod:`codegen.plan` from their lifetimes (time 0 copies the inputs in, node i
runs at time i + 1, time n + 1 copies the outputs out; a kernel's scratch buffer lives at its
node's time only), state tensors (``TensorInfo.is_state``) a static region. Identifiers come
from :class:`codegen.names.NameTable`; model names reach the C text only as escaped comments and
string literals. The flash / SRAM estimate is checked against a :class:`codegen.budget.Budget`.

Adding an op: a kernel template under templates/kernels/ (``refq_<op>_<dtype>.c.j2`` and
``.h``), a :class:`KernelSpec` registered with :func:`register_kernel`, and one function
decorated with :func:`lowering` in a module of :mod:`codegen.ops` (see codegen/ops/__init__.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codegen.budget import Budget, BudgetUse, check_budget, get_budget
from codegen.emit import c_int_literal
from codegen.names import (
    C_KEYWORDS,
    C_RESERVED_NAMES,
    MAX_IDENTIFIER_LENGTH,
    NameTable,
    c_comment,
    is_valid_identifier,
)
from codegen.plan import MemoryPlan, TensorLife, plan_memory
from refq.errors import CodegenError, UnsupportedError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.profiles import Profile, get_profile

CTYPES: dict[str, str] = {
    "int8": "int8_t",
    "uint8": "uint8_t",
    "int16": "int16_t",
    "uint16": "uint16_t",
    "int32": "int32_t",
    "int64": "int64_t",
    "float32": "float",
    "bool": "uint8_t",
}
"""C element type of each graph dtype (int4 tensors exist only as constants, arranged)."""

ALIGNMENT = 16
MODEL_CODE_BYTES = 512
"""Flash estimate of model.c without its calls: invoke prologue, copies, init (rounded up)."""
CALL_CODE_BYTES = 64
"""Flash estimate per kernel call (argument set-up, status check), besides its params struct
(4 bytes per value of its initializer)."""
STACK_ESTIMATE = 1024
"""SRAM estimate of the stack the model and its kernels use (their frames are small: every
buffer lives in the arena)."""


# ---------------------------------------------------------------------------------------------
# Kernel catalog
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSpec:
    """One generated C function: ``templates/kernels/<template>.c.j2`` rendered to
    ``<name>.c`` (with ``context``), its header ``<name>.h`` (from ``<header>.h`` or ``.h.j2``),
    and the support headers it includes. ``code_bytes``: flash estimate of the compiled function
    (Cortex-M4 / M7, -O2, both paths), checked against arm-none-eabi-size in the tests."""

    name: str
    code_bytes: int
    template: str = ""
    header: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)
    support: tuple[str, ...] = ()

    @property
    def source_template(self) -> str:
        return f"kernels/{self.template or self.name}.c.j2"

    @property
    def header_template(self) -> str:
        return f"kernels/{self.header or self.name}.h"


KERNELS: dict[str, KernelSpec] = {}


def register_kernel(spec: KernelSpec) -> KernelSpec:
    """Add a kernel to the catalog (at import time of its codegen.ops module)."""
    if spec.name in KERNELS:
        raise RuntimeError(f"kernel {spec.name!r} registered twice")
    if not is_valid_identifier(spec.name.replace("refq_", "k_", 1)):
        raise RuntimeError(f"kernel name {spec.name!r} is not a refq_ C identifier")
    KERNELS[spec.name] = spec
    return spec


Lowering = Callable[["LowerContext", Node, Any], None]
_LOWERINGS: dict[str, Lowering] = {}


def lowering(*ops: str) -> Callable[[Lowering], Lowering]:
    """Decorator: ``fn(ctx, node, params)`` lowers the graph ops ``ops``."""

    def register(fn: Lowering) -> Lowering:
        for op in ops:
            if op in _LOWERINGS:
                raise RuntimeError(f"op {op!r} has two C lowerings")
            _LOWERINGS[op] = fn
        return fn

    return register


def lowered_ops() -> list[str]:
    """The graph ops the C generator implements."""
    import codegen.ops  # noqa: F401  (registers every lowering)

    return sorted(_LOWERINGS)


# ---------------------------------------------------------------------------------------------
# The program description
# ---------------------------------------------------------------------------------------------


@dataclass
class ConstArray:
    """A constant array of weights.c: ``REFQ_ALIGN(16) const ctype symbol[len(data)]``."""

    symbol: str
    ctype: str
    data: np.ndarray
    comment: str

    @property
    def nbytes(self) -> int:
        return int(self.data.size) * np.dtype(_NP_OF_CTYPE[self.ctype]).itemsize


_NP_OF_CTYPE = {
    "uint64_t": np.uint64,
    "int8_t": np.int8,
    "uint8_t": np.uint8,
    "int16_t": np.int16,
    "uint16_t": np.uint16,
    "int32_t": np.int32,
    "uint32_t": np.uint32,
    "int64_t": np.int64,
}


@dataclass
class TensorPlace:
    """Where a tensor lives in the generated C: ``macro`` is its pointer expression's name."""

    name: str
    macro: str
    dtype: str
    ctype: str
    shape: tuple[int, ...]
    count: int
    nbytes: int
    region: str  # "arena", "state" or "const"
    offset: int = 0  # arena / state offset of its memory
    symbol: str = ""  # const: the array it points at
    alias_of: str | None = None  # RESHAPE: the tensor whose memory it shares

    def pointer(self, api: str) -> str:
        """The C expression the macro stands for: a const array, or arena / state memory."""
        if self.region == "const":
            return f"((const {self.ctype} *){self.symbol})"
        return f"(({self.ctype} *)(void *)({api}_{self.region} + {self.offset}))"


@dataclass
class Call:
    """One kernel call of invoke(): ``status = function(&ctx, &params, *args)``."""

    index: int
    node: Node
    function: str | None  # None: nothing to run (an alias)
    params_type: str | None
    params_ident: str
    fields: list[tuple[str, str]]
    args: list[str]
    scratch: int = 0
    scratch_offset: int = 0
    statics: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def comment(self) -> str:
        text = f"node {self.index}: {self.node.op} {self.node.name}"
        if self.note:
            text += f" ({self.note})"
        return c_comment(text)


@dataclass
class LoweredModel:
    """Everything the templates need to render model.h, model.c and weights.c."""

    graph: Graph
    profile: Profile
    api: str
    tensors: dict[str, TensorPlace]
    inputs: list[TensorPlace]
    outputs: list[TensorPlace]
    input_params: list[str]
    output_params: list[str]
    state: list[TensorPlace]
    constants: list[ConstArray]
    calls: list[Call]
    plan: MemoryPlan
    kernels: list[KernelSpec]
    weight_bytes: int
    code_bytes: int
    budget_use: BudgetUse

    @property
    def flash_estimate(self) -> int:
        return self.weight_bytes + self.code_bytes

    @property
    def sram_estimate(self) -> int:
        return self.plan.arena_size + self.plan.static_size + STACK_ESTIMATE

    @property
    def arena_size(self) -> int:
        return self.plan.arena_size

    @property
    def state_size(self) -> int:
        return self.plan.static_size

    def report(self) -> str:
        """A few lines for people: memory plan, flash / SRAM estimate and budget use."""
        return "\n".join(
            [
                f"model {self.graph.name!r} under profile {self.profile.name!r}: "
                f"{len(self.calls)} nodes, kernels {', '.join(k.name for k in self.kernels)}",
                f"memory plan: {self.plan.report()}",
                f"flash estimate: {self.weight_bytes:,} bytes of constants + "
                f"{self.code_bytes:,} bytes of code; SRAM estimate: arena + state + "
                f"{STACK_ESTIMATE:,} bytes of stack",
                f"budget: {self.budget_use.report()}",
            ]
        )


# ---------------------------------------------------------------------------------------------
# The context a lowering works with
# ---------------------------------------------------------------------------------------------


def _round_up(value: int, alignment: int = ALIGNMENT) -> int:
    return -(-value // alignment) * alignment


class LowerContext:
    """State of one lowering run; op lowerings use the methods below."""

    def __init__(self, graph: Graph, profile: Profile, api: str) -> None:
        self.graph = graph
        self.profile = profile
        self.api = api
        self.names = NameTable(max_len=MAX_IDENTIFIER_LENGTH)
        # Constant arrays are global symbols: they carry the API prefix (several models can
        # link into one program), without refq's own "refq_" (reserved for fixed symbols).
        self.const_prefix = (api[5:] if api.startswith("refq_") else api) + "_w_"
        self.constants: list[ConstArray] = []
        self._const_by_key: dict[tuple[str, bytes], ConstArray] = {}
        self.calls: list[Call] = []
        self.kernels: dict[str, KernelSpec] = {}
        self.aliases: dict[str, str] = {}
        self.used: set[str] = set()
        self.node: Node | None = None
        self.index = -1

    # -- errors ---------------------------------------------------------------------------------

    def where(self) -> str:
        node = self.node
        return (
            f"node {node.name!r} ({node.op})" if node is not None else f"graph {self.graph.name!r}"
        )

    def unsupported(self, what: str) -> UnsupportedError:
        """An :class:`UnsupportedError` naming the node, the op and the profile (raise it)."""
        return UnsupportedError(
            f"{self.where()}: {what} has no C implementation (profile {self.profile.name!r})"
        )

    # -- tensors ----------------------------------------------------------------------------------

    def info(self, name: str) -> TensorInfo:
        return self.graph.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The fixed shape of tensor ``name`` (run-time dimensions are refused)."""
        info = self.info(name)
        if any(d is None for d in info.shape):
            raise UnsupportedError(
                f"{self.where()}: tensor {name!r} has a run-time dimension {info.shape}; "
                "the C generator needs fixed shapes"
            )
        return tuple(int(d) for d in info.shape)

    def count(self, name: str) -> int:
        return int(np.prod(self.shape(name), dtype=np.int64))

    def ctype(self, name: str) -> str:
        info = self.info(name)
        if info.dtype not in CTYPES:
            raise UnsupportedError(
                f"{self.where()}: tensor {name!r} of dtype {info.dtype} cannot be passed to a "
                "kernel as is (int4 tensors exist only as arranged constants)"
            )
        return CTYPES[info.dtype]

    def ptr(self, name: str) -> str:
        """The C pointer expression (a macro of model.c) of tensor ``name``."""
        self.ctype(name)
        self.shape(name)
        self.used.add(name)
        return self.macro(name)

    def macro(self, name: str) -> str:
        return self.names.assign([name], "t_")[name]

    def alias(self, output: str, source: str) -> None:
        """``output`` shares ``source``'s memory (RESHAPE): no copy, no call."""
        if self.info(output).dtype != self.info(source).dtype:
            raise CodegenError(f"{self.where()}: alias {output!r} of {source!r} changes dtype")
        if self.info(output).is_state:
            raise UnsupportedError(f"{self.where()}: state tensor {output!r} cannot be an alias")
        self.aliases[output] = source
        self.used.update((output, source))
        self.calls.append(Call(self.index, self.node, None, None, "", [], [], note="alias"))

    # -- constants --------------------------------------------------------------------------------

    def const(self, key: str, ctype: str, data: Any, comment: str = "") -> str:
        """A constant array in weights.c; returns its symbol. Arrays with equal type and bytes
        are emitted once. ``key`` names it (a tensor or node name plus a role)."""
        if ctype not in _NP_OF_CTYPE:
            raise CodegenError(f"{self.where()}: constant {key!r} has unsupported C type {ctype}")
        np_type = _NP_OF_CTYPE[ctype]
        raw = np.asarray(data)
        if raw.dtype.kind not in "iub":
            raise CodegenError(f"{self.where()}: constant {key!r} is not integer data")
        info = np.iinfo(np_type)
        flat = raw.reshape(-1)
        if flat.size == 0:
            flat = np.zeros(1, dtype=np_type)  # C99 has no empty arrays
        if int(flat.min()) < info.min or int(flat.max()) > info.max:
            raise CodegenError(f"{self.where()}: constant {key!r} does not fit {ctype}")
        arr = np.ascontiguousarray(flat.astype(np_type))
        digest = (ctype, hashlib.sha256(arr.tobytes()).digest())
        found = self._const_by_key.get(digest)
        if found is not None:
            return found.symbol
        symbol = self.names.assign([key], self.const_prefix)[key]
        item = ConstArray(symbol, ctype, arr, comment or key)
        self._const_by_key[digest] = item
        self.constants.append(item)
        return item.symbol

    # -- calls ------------------------------------------------------------------------------------

    def kernel(self, name: str) -> KernelSpec:
        """Mark kernel ``name`` as used (its files go into the tree)."""
        try:
            spec = KERNELS[name]
        except KeyError:
            raise CodegenError(f"{self.where()}: unknown kernel {name!r}") from None
        self.kernels[name] = spec
        return spec

    def call(
        self,
        function: str,
        fields: Sequence[tuple[str, str | int]],
        args: Sequence[str | int],
        *,
        scratch: int = 0,
        statics: Iterable[str] = (),
        params_type: str | None = None,
        note: str = "",
    ) -> None:
        """``status = function(&ctx, &params, *args)`` with ``params`` a static const struct of
        type ``params_type`` (default ``function + "_params"``) initialized from ``fields``
        (name, C expression or int). ``scratch``: bytes of ``ctx.buf``."""
        self.kernel(function)
        if scratch < 0:
            raise CodegenError(f"{self.where()}: negative scratch size {scratch}")
        ident = self.names.assign([f"{self.index}:{self.node.name}"], "n_")[
            f"{self.index}:{self.node.name}"
        ]
        self.calls.append(
            Call(
                self.index,
                self.node,
                function,
                params_type or f"{function}_params",
                ident,
                [(f, self.c(v)) for f, v in fields],
                [self.c(a) for a in args],
                scratch=int(scratch),
                statics=list(statics),
                note=note,
            )
        )

    def static_ident(self, role: str) -> str:
        """A file-local identifier for an extra static object of the current node."""
        key = f"{self.index}:{self.node.name}:{role}"
        return self.names.assign([key], "s_")[key]

    @staticmethod
    def c(value: str | int | bool | np.integer) -> str:
        """A C expression: strings pass through, integers become int32 literals."""
        if isinstance(value, str):
            return value
        return c_int_literal(int(value), "int32_t")


# ---------------------------------------------------------------------------------------------
# Lowering a graph
# ---------------------------------------------------------------------------------------------


_API = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*")


def check_api(api: str) -> str:
    """The API prefix of a generated model (``refq_model`` -> ``refq_model_invoke``...)."""
    if (
        not isinstance(api, str)
        or not _API.fullmatch(api)
        or len(api) > 24
        or api in C_KEYWORDS
        or api in C_RESERVED_NAMES
    ):
        raise CodegenError(
            f"API prefix {api!r} must be a C identifier of at most 24 letters, digits and "
            "single underscores, starting with a letter (e.g. refq_model)"
        )
    return api


def lower_graph(
    graph: Graph,
    profile: str | Profile = "tflm",
    *,
    api: str = "refq_model",
    budget: str | Budget | None = None,
) -> LoweredModel:
    """Lower ``graph`` under ``profile`` (module docstring). Raises :class:`UnsupportedError`
    for ops / dtypes / profiles without C kernels, :class:`BudgetError` when the estimate does
    not fit ``budget`` (default STM32H743)."""
    import codegen.ops  # noqa: F401  (registers every lowering)

    check_api(api)
    prof = get_profile(profile)
    program = Program(graph, prof)  # validates and prepares: the params NumPy runs with
    ctx = LowerContext(graph, prof, api)
    for i, (node, _op, params) in enumerate(program.steps):
        ctx.node, ctx.index = node, i
        fn = _LOWERINGS.get(node.op)
        if fn is None:
            raise UnsupportedError(
                f"node {node.name!r}: op {node.op} has no C lowering yet; lowered ops: "
                f"{', '.join(lowered_ops())}"
            )
        fn(ctx, node, params)
    ctx.node, ctx.index = None, len(program.steps)
    for name in (*graph.inputs, *graph.outputs, *graph.state):
        ctx.ptr(name)
    return _place(ctx, get_budget(budget))


_DESIGNATOR = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*\s*=")


def _words(call: Call) -> int:
    """Values in a call's params initializer and static arrays (each a 4-byte word)."""
    text = ",".join(v for _, v in call.fields)
    flat = _DESIGNATOR.sub(" ", text).replace("{", ",").replace("}", ",")
    return sum(1 for a in flat.split(",") if a.strip()) + sum(
        s.count(",") + 1 for s in call.statics
    )


def _root(ctx: LowerContext, name: str) -> str:
    seen = []
    while name in ctx.aliases:
        seen.append(name)
        name = ctx.aliases[name]
        if name in seen:
            raise CodegenError(f"alias cycle through tensor {name!r}")
    return name


def _place(ctx: LowerContext, budget: Budget) -> LoweredModel:
    g = ctx.graph
    n = len(ctx.calls)
    first: dict[str, int] = {}
    last: dict[str, int] = {}

    def touch(name: str, t: int) -> None:
        root = _root(ctx, name)
        first[root] = min(first.get(root, t), t)
        last[root] = max(last.get(root, t), t)

    for name in g.inputs:
        touch(name, 0)
    for call in ctx.calls:
        for name in (*call.node.inputs, *call.node.outputs):
            if name is not None and name in ctx.used:
                touch(name, call.index + 1)
    for name in g.outputs:
        touch(name, n + 1)
    for name in ctx.used:
        if name not in first and name not in ctx.aliases:
            touch(name, 0)

    lives: list[TensorLife] = []
    regions: dict[str, str] = {}
    for root in sorted(first):
        info = g.tensors[root]
        if info.is_constant:
            regions[root] = "const"
            continue
        regions[root] = "state" if info.is_state else "arena"
        size = info.nbytes(ctx.shape(root)) if info.dtype in CTYPES else 0
        lives.append(TensorLife(root, size, first[root], last[root], persistent=info.is_state))
    for call in ctx.calls:
        if call.scratch:
            lives.append(
                TensorLife(f"\0scratch:{call.index}", call.scratch, call.index + 1, call.index + 1)
            )
    plan = plan_memory(lives, ALIGNMENT)
    for call in ctx.calls:
        if call.scratch:
            call.scratch_offset = plan.offsets[f"\0scratch:{call.index}"]

    places: dict[str, TensorPlace] = {}
    for name in sorted(ctx.used):
        root = _root(ctx, name)
        info = g.tensors[name]
        shape = ctx.shape(name)
        ctype = CTYPES[info.dtype]
        place = TensorPlace(
            name=name,
            macro=ctx.macro(name),
            dtype=info.dtype,
            ctype=ctype,
            shape=shape,
            count=int(np.prod(shape, dtype=np.int64)),
            nbytes=info.nbytes(shape),
            region=regions[root],
            alias_of=root if root != name else None,
        )
        if place.region == "const":
            root_info = g.tensors[root]
            if root_info.dtype in ("float32",) or root_info.dtype not in CTYPES:
                raise UnsupportedError(
                    f"constant tensor {root!r} ({root_info.dtype}) is read directly by a kernel "
                    "or copied to an output; the C generator emits integer constants only"
                )
            place.symbol = ctx.const(root, ctype, np.asarray(root_info.data), f"tensor {root}")
        elif place.region == "state":
            place.offset = plan.static_offsets[root]
        else:
            place.offset = plan.offsets[root]
        places[name] = place

    params = NameTable()
    in_names = params.assign(g.inputs, "in_")
    out_names = params.assign(g.outputs, "out_")
    weight_bytes = sum(_round_up(c.nbytes) for c in ctx.constants)
    kernels = [ctx.kernels[k] for k in sorted(ctx.kernels)]
    code_bytes = (
        MODEL_CODE_BYTES
        + sum(k.code_bytes for k in kernels)
        + sum(CALL_CODE_BYTES + 4 * _words(c) for c in ctx.calls if c.function)
    )
    sram = plan.arena_size + plan.static_size + STACK_ESTIMATE
    use = check_budget(weight_bytes + code_bytes, sram, budget)
    return LoweredModel(
        graph=g,
        profile=ctx.profile,
        api=ctx.api,
        tensors=places,
        inputs=[places[t] for t in g.inputs],
        outputs=[places[t] for t in g.outputs],
        input_params=[in_names[t] for t in g.inputs],
        output_params=[out_names[t] for t in g.outputs],
        state=[places[t] for t in g.state],
        constants=ctx.constants,
        calls=ctx.calls,
        plan=plan,
        kernels=kernels,
        weight_bytes=weight_bytes,
        code_bytes=code_bytes,
        budget_use=use,
    )
