"""Read a .tflite flatbuffer into a refq :class:`~refq.graph.Graph`.

The layout comes from the TFLite schema module shipped in the tflite-micro wheel (the ``tflite``
extra); every read goes through :class:`~refq.tflite.checked_table.CheckedTable`, so a malformed,
truncated or hostile file raises :class:`~refq.errors.ModelFormatError` naming the object path and
byte offset, never another exception. On top of the bounds checks the reader enforces what a
well-formed model means for TFLite Micro, and rejects what TFLM would run as undefined behaviour:

- the whole flatbuffer is verified first (every table reachable from the root, every field,
  known to refq or not, through checked reads), as the flatbuffers verifier does;
- file identifier ``TFL3`` at bytes 4-7, schema version 3, exactly one subgraph (TFLM prepares
  every subgraph, and refq has no control-flow ops that could call others);
- operator codes: builtin code = max(deprecated_builtin_code, builtin_code) (the schema's rule for
  codes above 127); custom ops, builtins unknown to the schema and ops without a refq mapping in
  :mod:`refq.tflite.optable` raise :class:`~refq.errors.UnsupportedError` naming op and index;
- tensors: a supported type, non-negative dims, constant data (inline, or outside the flatbuffer
  at ``offset`` / ``size`` from the file start for models over 2 GB) of exactly
  ``prod(shape) * itemsize`` bytes (INT4: ``ceil(prod(shape) / 2)``, packed two per byte, element 0
  in the low nibble, unpacked to int8); quantization with as many zero points as scales, finite
  positive scales, zero points inside the type's range, and per-channel scales matching
  ``shape[quantized_dimension]`` and zero points 0 (TFLM's per-channel kernels ignore them);
  no sparsity, custom quantization or external buffers;
- no variable tensors (no TFLite op refq runs is stateful);
- operators: tensor indices in range (``-1`` only for an optional input), builtin options of the
  type the op expects, finite float options, RESHAPE's new_shape of at most 8 entries (TFLite's
  parser limit); a per-tensor FULLY_CONNECTED's bias scale close to input x weights scale (the
  check TFLite's Prepare makes); every input is a constant, a graph input or the output of an
  earlier operator, and every tensor has at most one producer.
"""

from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np

from refq.errors import ModelFormatError, UnsupportedError
from refq.graph import DTYPES, Graph, Node, TensorInfo
from refq.tflite.checked_table import open_root, open_table, verify_tree, wrap
from refq.tflite.optable import OPS, options_to_attrs, tensor_type_name
from refq.tflite.schema import schema

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

# Options fields refq does not map to attributes but whose non-default values would change what
# TFLM computes: they must hold the value refq implements.
_REQUIRED_OPTIONS: dict[str, tuple[tuple[str, Any, str], ...]] = {
    # accessor, required value, what the other values mean
    "FULLY_CONNECTED": (("WeightsFormat", 0, "shuffled weights (SHUFFLED4x16INT8)"),),
}

# Integer-vector options TFLite's parsers copy into fixed-size arrays; longer ones fail to parse.
_MAX_ENTRIES: dict[tuple[str, str], int] = {("RESHAPE", "new_shape"): 8}

# Input positions the schema lets a file leave out (tensor index -1).
_OPTIONAL_INPUTS: dict[str, tuple[int, ...]] = {"FULLY_CONNECTED": (2,), "RESHAPE": (1,)}

# Inclusive integer range of each quantized storage type, for zero-point checks.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int4": (-8, 7),
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

MAX_TENSOR_BYTES = 2**31 - 1  # TFLite sizes tensors in int; larger is corrupt


def read_tflite(data: bytes | bytearray | memoryview, *, name: str | None = None) -> Graph:
    """Parse .tflite bytes into a Graph (subgraph 0). See the module docstring for the checks."""
    buf = bytes(data)
    if len(buf) < 8:
        raise ModelFormatError(f"not a .tflite model: {len(buf)} bytes is too short")
    if buf[4:8] != FILE_IDENTIFIER:
        raise ModelFormatError(
            f"not a .tflite model: file identifier at bytes 4-7 is {buf[4:8]!r}, "
            f"expected {FILE_IDENTIFIER!r}"
        )
    return _Reader(buf).graph(name)


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.s = schema()
        self.model = open_root(self.s.Model, buf)
        version = self.model.Version()
        if version != SCHEMA_VERSION:
            raise ModelFormatError(
                f"model.version is {version}; refq reads TFLite schema version {SCHEMA_VERSION}"
            )
        verify_tree(self.model, self.s)
        self.n_buffers = self.model.BuffersLength()
        self.opcodes = self._opcodes()

    # -- operator codes ----------------------------------------------------------------------
    def _opcodes(self) -> list[tuple[int, str | None]]:
        """(builtin code, custom code) of each entry of model.operator_codes."""
        out = []
        for j in range(self.model.OperatorCodesLength()):
            oc = wrap(self.model.OperatorCodes(j), f"model.operator_codes[{j}]")
            code = max(int(oc.DeprecatedBuiltinCode()), int(oc.BuiltinCode()))
            custom = oc.CustomCode()
            out.append((code, None if custom is None else _text(custom)))
        return out

    def _op_name(self, i: int, opcode_index: int) -> str:
        if opcode_index >= len(self.opcodes):
            raise ModelFormatError(
                f"operator {i}: opcode_index {opcode_index} is out of range "
                f"(model has {len(self.opcodes)} operator codes)"
            )
        code, custom = self.opcodes[opcode_index]
        if code == self.s.BuiltinOperator.CUSTOM:
            raise UnsupportedError(
                f"operator {i} is the custom op {custom!r}; refq runs builtin TFLite ops only"
            )
        op = _builtin_names().get(code)
        if op is None:
            raise UnsupportedError(f"operator {i} has unknown builtin operator code {code}")
        if op not in OPS:
            raise UnsupportedError(
                f"operator {i} is {op}, which refq does not support; supported TFLite ops: "
                f"{', '.join(sorted(OPS))}"
            )
        return op

    # -- buffers ---------------------------------------------------------------------------------
    def _buffer(self, index: int, tensor: str) -> bytes | None:
        """Bytes of model.buffers[index] (inline or at offset/size), None when empty."""
        if index >= self.n_buffers:
            raise ModelFormatError(
                f"tensor {tensor!r} refers to buffer {index}, but the model has "
                f"{self.n_buffers} buffers"
            )
        path = f"model.buffers[{index}]"
        b = wrap(self.model.Buffers(index), path)
        inline = None if b.DataIsNone() else b.DataAsNumpy()
        offset, size = int(b.Offset()), int(b.Size())
        if offset > 1:
            # Models over 2 GB keep buffer data after the flatbuffer, at an offset from the
            # start of the file (the schema marks offsets 0 and 1 as "not used").
            if inline is not None and inline.size:
                raise ModelFormatError(f"{path} has both inline data and an offset ({offset})")
            if offset + size > len(self.buf):
                raise ModelFormatError(
                    f"{path}: data at offset {offset} with size {size} runs past the end of "
                    f"the {len(self.buf)}-byte file"
                )
            raw = self.buf[offset : offset + size]
        else:
            if size:
                raise ModelFormatError(f"{path} has size {size} but no offset")
            raw = b"" if inline is None else inline.tobytes()
        if index == 0 and raw:
            raise ModelFormatError("model.buffers[0] must be the empty sentinel buffer")
        return raw or None

    # -- tensors ---------------------------------------------------------------------------------
    def _tensor(self, t: Any, i: int, name: str) -> TensorInfo:
        path = f"subgraphs[0].tensors[{i}]"
        try:
            dtype = tensor_type_name(int(t.Type()))
        except UnsupportedError as exc:
            raise UnsupportedError(f"tensor {name!r} (index {i}): {exc}") from None
        if t.Sparsity() is not None:
            raise UnsupportedError(f"tensor {name!r} (index {i}) is sparse; refq reads dense only")
        if t.ExternalBuffer():
            raise UnsupportedError(
                f"tensor {name!r} (index {i}) keeps its data in an external buffer group"
            )
        shape = tuple(int(d) for d in _ints(t.ShapeAsNumpy()))
        if any(d < 0 for d in shape):
            raise ModelFormatError(f"tensor {name!r} (index {i}) has a negative dimension: {shape}")
        count = math.prod(shape)
        itemsize = DTYPES[dtype].itemsize
        if count * itemsize > MAX_TENSOR_BYTES:
            raise ModelFormatError(
                f"tensor {name!r} (index {i}) of shape {shape} would take more than 2 GB"
            )
        scale, zp, axis = self._quantization(t, i, name, dtype, shape, path)
        raw = self._buffer(int(t.Buffer()), name)
        data = None if raw is None else _decode(raw, dtype, shape, name, i)
        info = TensorInfo(
            name=name,
            dtype=dtype,
            shape=shape,
            scale=scale,
            zero_point=zp,
            axis=axis,
            data=data,
            is_state=bool(t.IsVariable()),
        )
        if info.is_state:
            # No TFLite op refq runs reads or writes variables; TFLM would feed the op its reset
            # value, which a stateless graph cannot express.
            raise UnsupportedError(
                f"tensor {name!r} (index {i}) is a variable tensor; the TFLite ops refq runs "
                "are stateless"
            )
        return info

    def _quantization(
        self, t: Any, i: int, name: str, dtype: str, shape: tuple[int, ...], path: str
    ) -> tuple[np.ndarray | None, np.ndarray | None, int | None]:
        q = t.Quantization()
        if q is None:
            return None, None, None
        q = wrap(q, path + ".quantization")
        who = f"tensor {name!r} (index {i})"
        if q.DetailsType() != self.s.QuantizationDetails.NONE:
            raise UnsupportedError(f"{who} uses custom / blockwise quantization details")
        scale = None if q.ScaleIsNone() else q.ScaleAsNumpy().astype(np.float32)
        zp = None if q.ZeroPointIsNone() else q.ZeroPointAsNumpy().astype(np.int64)
        if scale is None or scale.size == 0:
            if zp is not None and zp.size:
                raise ModelFormatError(f"{who} has {zp.size} zero points but no scale")
            return None, None, None
        if zp is None or zp.size != scale.size:
            raise ModelFormatError(
                f"{who} has {scale.size} scales but {0 if zp is None else zp.size} zero points"
            )
        bad = np.flatnonzero(~(np.isfinite(scale) & (scale > 0)))
        if bad.size:
            k = int(bad[0])
            raise ModelFormatError(
                f"{who}: scale {float(scale[k])!r} at index {k} is not positive and finite"
            )
        if dtype in _INT_RANGES:
            lo, hi = _INT_RANGES[dtype]
            bad = np.flatnonzero((zp < lo) | (zp > hi))
            if bad.size:
                k = int(bad[0])
                raise ModelFormatError(
                    f"{who}: zero point {int(zp[k])} at index {k} is outside the {dtype} range "
                    f"[{lo}, {hi}]"
                )
        if scale.size == 1:
            return scale.reshape(()), zp.reshape(()), None
        nz = np.flatnonzero(zp)
        if nz.size:
            # TFLite's per-axis quantization is symmetric; TFLM's per-channel kernels ignore
            # the zero points, so a file with nonzero ones has no defined TFLM result.
            k = int(nz[0])
            raise ModelFormatError(
                f"{who}: per-channel zero point {int(zp[k])} at channel {k}; TFLite per-channel "
                "quantization is symmetric (zero points 0) and TFLM ignores them"
            )
        axis = int(q.QuantizedDimension())
        if not 0 <= axis < len(shape) or shape[axis] != scale.size:
            raise ModelFormatError(
                f"{who} of shape {shape} has {scale.size} per-channel scales along "
                f"quantized_dimension {axis}"
            )
        return scale, zp, axis

    # -- operators -------------------------------------------------------------------------------
    def _options(self, op_obj: Any, i: int, op: str) -> dict[str, Any]:
        mapping = OPS[op]
        path = f"subgraphs[0].operators[{i}].builtin_options"
        kind = int(op_obj.BuiltinOptionsType())
        expected = 0 if mapping.options is None else getattr(self.s.BuiltinOptions, mapping.options)
        if kind not in (0, expected):
            raise ModelFormatError(
                f"operator {i} ({op}) has builtin options of union type {kind}; expected "
                f"{mapping.options or 'none'} ({expected})"
            )
        table = op_obj.BuiltinOptions() if kind else None
        if table is None:
            # Absent options (or a type without a table): TFLM's parsers leave the zeroed
            # builtin-data struct, i.e. the schema defaults (SOFTMAX beta 0, not 1).
            empty = None if mapping.options is None else getattr(self.s, mapping.options + "T")()
            return options_to_attrs(op, empty)
        obj = open_table(getattr(self.s, mapping.options), self.buf, table.Pos, path)
        values = {}
        for f in mapping.fields:
            acc = f.field[0].upper() + f.field[1:]
            if f.kind == "ints":
                v = None if getattr(obj, acc + "IsNone")() else getattr(obj, acc + "AsNumpy")()
                limit = _MAX_ENTRIES.get((op, f.attr))
                if v is not None and limit is not None and v.size > limit:
                    raise ModelFormatError(
                        f"operator {i} ({op}): option {f.attr} has {v.size} entries; TFLite "
                        f"takes at most {limit}"
                    )
                values[f.field] = v
            else:
                values[f.field] = getattr(obj, acc)()
                if f.kind == "float" and not math.isfinite(values[f.field]):
                    raise ModelFormatError(
                        f"operator {i} ({op}): option {f.attr} = {values[f.field]} is not finite"
                    )
        for acc, required, meaning in _REQUIRED_OPTIONS.get(op, ()):
            if getattr(obj, acc)() != required:
                raise UnsupportedError(f"operator {i} ({op}) uses {meaning}; refq does not")
        try:
            return options_to_attrs(op, SimpleNamespace(**values))
        except UnsupportedError as exc:
            raise UnsupportedError(f"operator {i}: {exc}") from None

    def graph(self, name: str | None) -> Graph:
        n_sub = self.model.SubgraphsLength()
        if n_sub == 0:
            raise ModelFormatError("model has no subgraphs")
        if n_sub > 1:
            # TFLM allocates and prepares every subgraph; refq has no control-flow ops that
            # could call them, so only single-subgraph models are accepted.
            raise UnsupportedError(
                f"model has {n_sub} subgraphs; refq runs single-subgraph models (no control flow)"
            )
        sg = wrap(self.model.Subgraphs(0), "subgraphs[0]")
        n = sg.TensorsLength()
        names = _unique_names(
            [_text(wrap(sg.Tensors(i), f"subgraphs[0].tensors[{i}]").Name()) for i in range(n)]
        )
        tensors: dict[str, TensorInfo] = {}
        for i in range(n):
            t = wrap(sg.Tensors(i), f"subgraphs[0].tensors[{i}]")
            tensors[names[i]] = self._tensor(t, i, names[i])

        def io(vec: Any, what: str) -> list[str]:
            idx = _ints(vec)
            bad = [int(k) for k in idx if not 0 <= k < n]
            if bad:
                raise ModelFormatError(
                    f"subgraph 0 {what} refer to tensor {bad[0]}, but it has {n} tensors"
                )
            if len(set(idx.tolist())) != idx.size:
                raise ModelFormatError(f"subgraph 0 {what} list a tensor twice: {idx.tolist()}")
            return [names[int(k)] for k in idx]

        inputs = io(sg.InputsAsNumpy(), "inputs")
        outputs = io(sg.OutputsAsNumpy(), "outputs")
        if not outputs:
            raise ModelFormatError("subgraph 0 has no outputs")
        for nm in inputs:
            if tensors[nm].is_constant:
                raise ModelFormatError(f"graph input {nm!r} has constant data")

        known = {k for k, t in tensors.items() if t.is_constant} | set(inputs)
        producer: dict[str, int] = {}
        nodes = []
        for i in range(sg.OperatorsLength()):
            o = wrap(sg.Operators(i), f"subgraphs[0].operators[{i}]")
            op = self._op_name(i, int(o.OpcodeIndex()))
            ins: list[str | None] = []
            for j, k in enumerate(_ints(o.InputsAsNumpy()).tolist()):
                if k == -1 and j in _OPTIONAL_INPUTS.get(op, ()):
                    ins.append(None)  # absent optional input
                elif k == -1:
                    raise ModelFormatError(f"operator {i} ({op}) input {j} is absent (-1)")
                elif not 0 <= k < n:
                    raise ModelFormatError(f"operator {i} ({op}) input tensor {k} is out of range")
                elif names[k] not in known:
                    raise ModelFormatError(
                        f"operator {i} ({op}) reads tensor {names[k]!r} (index {k}), which is "
                        "neither a constant, a graph input nor an earlier output"
                    )
                else:
                    ins.append(names[k])
            outs = []
            for k in _ints(o.OutputsAsNumpy()).tolist():
                if not 0 <= k < n:
                    raise ModelFormatError(f"operator {i} ({op}) output tensor {k} is out of range")
                t_name = names[k]
                t = tensors[t_name]
                if t.is_constant or t_name in inputs:
                    raise ModelFormatError(
                        f"operator {i} ({op}) writes tensor {t_name!r} (index {k}), which is a "
                        "constant or a graph input"
                    )
                if t_name in producer:
                    raise ModelFormatError(
                        f"tensor {t_name!r} (index {k}) is written by operators "
                        f"{producer[t_name]} and {i}"
                    )
                producer[t_name] = i
                outs.append(t_name)
            if not outs:
                raise ModelFormatError(f"operator {i} ({op}) has no outputs")
            attrs = self._options(o, i, op)
            known.update(outs)
            node = Node(op, tuple(ins), tuple(outs), attrs, name=f"{op.lower()}_{i}")
            _check_fc_dtypes(node, tensors, i)
            _check_bias_scale(node, tensors, i)
            nodes.append(node)
        for nm in outputs:
            if nm not in known:
                raise ModelFormatError(f"graph output {nm!r} is never produced")

        description = self.model.Description()
        sg_name = sg.Name()
        graph = Graph(
            tensors=tensors,
            nodes=nodes,
            inputs=inputs,
            outputs=outputs,
            name=name or (_text(sg_name) if sg_name else "") or "model",
            metadata={
                "format": "tflite",
                "schema_version": SCHEMA_VERSION,
                "description": None if description is None else _text(description),
                "subgraphs": n_sub,
                "tensor_index": {nm: i for i, nm in enumerate(names)},
                "metadata": self._metadata_names(),
            },
        )
        graph.validate()
        return graph

    def _metadata_names(self) -> list[str]:
        out = []
        for j in range(self.model.MetadataLength()):
            m = wrap(self.model.Metadata(j), f"model.metadata[{j}]")
            out.append(_text(m.Name() or b""))
        return out


_FC_DTYPES = (("int8", "int8", "int8"), ("int8", "int4", "int8"), ("int16", "int8", "int16"))
"""(input, weights, output) types TFLite's FULLY_CONNECTED Prepare accepts (TFLM and LiteRT)."""


def _check_fc_dtypes(node: Node, tensors: dict[str, TensorInfo], i: int) -> None:
    """Refuse FULLY_CONNECTED type combinations the peers refuse, so that reading a file never
    yields an answer TFLite would not give (refq's kernel itself also serves ONNX-style uint8)."""
    if node.op != "FULLY_CONNECTED":
        return
    x, w = (tensors[n] for n in node.inputs[:2])  # type: ignore[index]
    kinds = (x.dtype, w.dtype, tensors[node.outputs[0]].dtype)
    if kinds not in _FC_DTYPES:
        raise UnsupportedError(
            f"operator {i} (FULLY_CONNECTED): (input, weights, output) types {kinds} are not a "
            f"TFLite FULLY_CONNECTED; supported: {_FC_DTYPES}"
        )


def _check_bias_scale(node: Node, tensors: dict[str, TensorInfo], i: int) -> None:
    """TFLite's FULLY_CONNECTED Prepare (TFLM and LiteRT) refuses a per-tensor layer whose bias
    scale strays from the input x weights scale: with ``p = double(float32(s_in * s_w))``, it
    needs ``|p - s_bias| / s_out <= 0.02`` (an unquantized bias counts as scale 0). Per-channel
    layers are not checked by the peers, so neither are they here."""
    if node.op != "FULLY_CONNECTED" or len(node.inputs) < 3 or node.inputs[2] is None:
        return
    x, w, b = (tensors[n] for n in node.inputs[:3])  # type: ignore[index]
    y = tensors[node.outputs[0]]
    if not (x.quantized and w.quantized and y.quantized) or w.scale.size != 1:
        return
    product = float(np.float32(x.scale.reshape(-1)[0]) * np.float32(w.scale.reshape(-1)[0]))
    s_bias = float(b.scale.reshape(-1)[0]) if b.quantized else 0.0
    s_out = float(y.scale.reshape(-1)[0])
    if abs(product - s_bias) / s_out > 0.02:
        raise ModelFormatError(
            f"operator {i} (FULLY_CONNECTED): bias {b.name!r} has scale {s_bias!r}, but input x "
            f"weights scale is {product!r} (|difference| / output scale {s_out!r} > 0.02); "
            "TFLite refuses this layer"
        )


@cache
def _builtin_names() -> dict[int, str]:
    return {v: k for k, v in vars(schema().BuiltinOperator).items() if k.isupper()}


def _ints(vec: Any) -> np.ndarray:
    """A generated ``...AsNumpy()`` result (``0`` when the vector is absent) as an int64 array."""
    if isinstance(vec, np.ndarray):
        return vec.astype(np.int64)
    return np.zeros(0, dtype=np.int64)


def _text(raw: bytes | None) -> str:
    # Names are descriptive only: undecodable bytes are shown escaped rather than rejected.
    return "" if raw is None else raw.decode("utf-8", errors="backslashreplace")


def _unique_names(raw: list[str]) -> list[str]:
    """Graph tensors are keyed by name; TFLite names may be empty or repeated."""
    taken = set(raw)
    seen: set[str] = set()
    out = []
    for i, nm in enumerate(raw):
        if nm and nm not in seen:
            out.append(nm)
            seen.add(nm)
            continue
        cand = f"{nm or 'tensor'}#{i}"
        while cand in taken or cand in seen:
            cand += "'"
        out.append(cand)
        seen.add(cand)
    return out


def _decode(raw: bytes, dtype: str, shape: tuple[int, ...], name: str, i: int) -> np.ndarray:
    """Constant data of a tensor from its buffer bytes (little-endian; INT4 packed)."""
    count = math.prod(shape)
    if dtype == "int4":
        from refq.packing import packed_size, unpack_bits

        expected = packed_size(count, 4)
    else:
        expected = count * DTYPES[dtype].itemsize
    if len(raw) != expected:
        raise ModelFormatError(
            f"tensor {name!r} (index {i}) of type {dtype} and shape {shape} needs {expected} "
            f"bytes of data, its buffer holds {len(raw)}"
        )
    if dtype == "int4":
        return unpack_bits(np.frombuffer(raw, np.uint8), shape, 4, signed=True, name=name)
    if dtype == "bool":
        b = np.frombuffer(raw, np.uint8)
        if np.any(b > 1):
            raise ModelFormatError(f"bool tensor {name!r} (index {i}) holds bytes other than 0/1")
        return b.astype(np.bool_).reshape(shape)
    dt = DTYPES[dtype]
    return np.frombuffer(raw, dt.newbyteorder("<")).astype(dt).reshape(shape)
