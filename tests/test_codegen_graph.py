"""Generated models as a whole: multi-op graphs, state, hostile names, the output directory,
budgets, the memory plan, the API's error statuses and the ``refq codegen`` command.

Multi-op graphs (an embedding, a two-layer MLP with int8 and int4 weights and a residual, a
requantization, a RESHAPE alias, TRANSPOSE, BATCH_MATMUL, MUL, CONCATENATION, under two
profiles), a stateful graph and a graph whose every name is hostile are generated into one tree
and run on the host (UBSan + ASan), Cortex-M7 (DSP) and Cortex-M4 (plain C); outputs must equal
``Program(graph, profile).run`` byte for byte, state persisting across invocations.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from codegen.budget import Budget
from codegen.build import build
from codegen.emit import MARKER_FILE, write_tree
from codegen.generate import generate, render_model, tree_files
from codegen.lower import lower_graph
from codegen.run import run
from refq.cli import main as refq_main
from refq.errors import BudgetError, CodegenError
from refq.graph import Graph, Node, TensorInfo
from tests.codegen_cases import f32, random_inputs
from tests.codegen_image import Case, Image, require_config
from tests.conftest import require_module, require_tool

SEED = 20261202
CONFIGS = ("host-ubsan-asan", "m7", "m4-plain-c")


def block_graph(seed: int, name: str) -> Graph:
    """Embedding -> FC (int8, per channel, RELU) -> FC (int4) -> residual ADD -> QUANTIZE ->
    RESHAPE (alias) -> TRANSPOSE -> BATCH_MATMUL -> MUL; CONCATENATION and an FC head."""
    rng = np.random.default_rng(seed)
    t: dict[str, TensorInfo] = {}

    def q(n, shape, scale, zp=0, **kw):
        t[n] = TensorInfo(n, kw.pop("dtype", "int8"), shape, scale=scale, zero_point=zp, **kw)
        return n

    t["ids"] = TensorInfo("ids", "int32", (4,))
    q("table", (16, 32), 0.05, 3, data=rng.integers(-128, 128, (16, 32)).astype(np.int8))
    q("h0", (4, 32), 0.05, 3)
    s1 = rng.uniform(0.002, 0.02, 64).astype(np.float32)
    q("w1", (64, 32), s1, np.zeros(64, np.int64), axis=0, data=rng.integers(-128, 128, (64, 32)))
    t["b1"] = TensorInfo("b1", "int32", (64,), data=rng.integers(-3000, 3000, 64).astype(np.int32))
    q("a", (4, 64), 0.08, -20)
    s2 = rng.uniform(0.01, 0.05, 32).astype(np.float32)
    q(
        "w2",
        (32, 64),
        s2,
        np.zeros(32, np.int64),
        axis=0,
        dtype="int4",
        data=rng.integers(-8, 8, (32, 64)),
    )
    q("b", (4, 32), 0.1, 5)
    q("h1", (4, 32), 0.12, -2)
    q("h1q", (4, 32), 0.07, 1)
    q("h1r", (4, 4, 8), 0.07, 1)
    t["perm"] = TensorInfo("perm", "int32", (3,), data=np.array([1, 0, 2], np.int32))
    q("ht", (4, 4, 8), 0.07, 1)
    q("att", (4, 4, 4), 0.3, -4)
    q("sq", (4, 4, 4), 0.5, 0)
    q("cat", (4, 8, 8), 0.07, 1)
    q("wh", (10, 32), f32(0.01), 0, data=rng.integers(-128, 128, (10, 32)).astype(np.int8))
    q("logits", (4, 10), 0.2, 7)
    nodes = [
        Node("EMBEDDING_LOOKUP", ("ids", "table"), ("h0",)),
        Node("FULLY_CONNECTED", ("h0", "w1", "b1"), ("a",), {"activation": "RELU"}),
        Node("FULLY_CONNECTED", ("a", "w2"), ("b",)),
        Node("ADD", ("b", "h0"), ("h1",)),
        Node("QUANTIZE", ("h1",), ("h1q",)),
        Node("RESHAPE", ("h1q",), ("h1r",), {"new_shape": [4, 4, 8]}),
        Node("TRANSPOSE", ("h1r", "perm"), ("ht",)),
        Node("BATCH_MATMUL", ("ht", "h1r"), ("att",), {"adj_y": True}),
        Node("MUL", ("att", "att"), ("sq",)),
        Node("CONCATENATION", ("h1r", "ht"), ("cat",), {"axis": 1}),
        Node("FULLY_CONNECTED", ("h1", "wh"), ("logits",)),
    ]
    return Graph(t, nodes, ["ids"], ["sq", "cat", "logits"], name=name)


def state_graph() -> Graph:
    """y = x + kv, kv a state tensor (starts at its zero point, persists across invocations)."""
    t = {
        "x": TensorInfo("x", "int8", (4, 16), scale=0.1, zero_point=2),
        "kv": TensorInfo("kv", "int8", (4, 16), scale=0.07, zero_point=-9, is_state=True),
        "y": TensorInfo("y", "int8", (4, 16), scale=0.2, zero_point=1),
    }
    return Graph(t, [Node("ADD", ("x", "kv"), ("y",))], ["x"], ["y"], name="state")


HOSTILE = [
    'x"*/ int evil; /*',
    "y\nint evil2 = 1;",
    "int",
    "main",
    "refq_model_invoke",
    "ресурс",
    "a.b",
    "a_b",
    "??/ evil3",
    "\\",
    "t_x",
    "1abc",
    "_Reserved",
    "e" * 300,
    "",
]
HOSTILE_GRAPH_NAME = 'model "*/ #include <evil.h>\n\t\x01 ünï ??='


def hostile_graph() -> Graph:
    """A chain of ADDs whose tensor and node names are all hostile (quotes, comment ends,
    newlines, keywords, reserved and refq names, non-ASCII, duplicates after sanitizing)."""
    names = HOSTILE
    t = {}
    for i, n in enumerate(names):
        t[n] = TensorInfo(n, "int8", (3, 5), scale=f32(0.05 + 0.01 * i), zero_point=i - 7)
    nodes = [
        Node("ADD", (names[i], names[0]), (names[i + 1],), name=f"*/ node {names[i]}")
        for i in range(1, len(names) - 1)
    ]
    return Graph(t, nodes, [names[0], names[1]], [names[-1], names[5]], name=HOSTILE_GRAPH_NAME)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    rng = np.random.default_rng(SEED)
    cases = []
    for i, profile in enumerate(("tflm", "cmsis-nn-single")):
        g = block_graph(SEED + i, f"block {profile}")
        cases.append(Case(g, profile, random_inputs(g, rng), what=f"block under {profile}"))
    g = state_graph()
    cases.append(Case(g, "tflm", random_inputs(g, rng, sets=4), what="stateful ADD"))
    g = hostile_graph()
    cases.append(Case(g, "litert-ref", random_inputs(g, rng), what="hostile names"))
    return Image(tmp_path_factory.mktemp("codegen_graph"), cases)


@pytest.mark.parametrize("config", CONFIGS)
def test_graphs_match_reference(config, image, checked):
    """Every output byte equals the reference (state persisting across input sets); on
    Cortex-M the lowering's flash / SRAM estimates cover the compiled objects."""
    require_config(config)
    result = image.run(config)
    problems = image.mismatches(result)
    assert not problems, "\n".join(problems)
    checked(
        f"generated C models (multi-op, state, hostile names) on {config} vs refq",
        len(image.cases),
        image.elements(),
    )
    if config != "host-ubsan-asan":
        _check_estimates(image, config)


def _code_only(text: str) -> str:
    """C text without comments and string literals."""
    return re.sub(r'/\*.*?\*/|"(?:\\.|[^"\\\n])*"', " ", text, flags=re.S)


def test_hostile_names_stay_in_comments_and_strings(image):
    hostile = next(
        g for g, c in zip(image.models, image.cases, strict=True) if c.what == "hostile names"
    )
    for name, text in hostile.files.items():
        if name.endswith((".c", ".h")):
            code = _code_only(text)
            # Identifiers may keep readable fragments (in_x_int_evil); the injected code may not.
            for word in ("int evil", "evil2 = 1", "#include <evil", "ресурс", "\x01", "??"):
                assert word not in code, (name, word)
    m = hostile.lowered
    idents = m.input_params + m.output_params + [t.macro for t in m.tensors.values()]
    assert len(set(idents)) == len(idents)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", i) for i in idents)


def test_memory_plan_aliases_and_bound(image):
    block = image.models[0].lowered
    reshaped = block.tensors["h1r"]
    assert reshaped.alias_of == "h1q" and reshaped.offset == block.tensors["h1q"].offset
    assert block.tensors["table"].region == "const"
    assert all(t.region == "arena" for t in block.inputs + block.outputs)
    assert block.plan.arena_size <= 1.05 * block.plan.lower_bound
    assert any(c.scratch for c in block.calls)
    state = image.models[2].lowered
    assert [t.region for t in state.state] == ["state"] and state.plan.static_size == 64


def test_generated_tree_is_deterministic():
    g = block_graph(SEED, "determinism")
    a = tree_files([render_model(g, "tflm")], harness=True)
    b = tree_files([render_model(g, "tflm")], harness=True)
    assert a == b
    signature = (
        "refq_status refq_model_invoke(const int32_t *in_ids, int8_t *out_sq, int8_t *out_cat, "
        "int8_t *out_logits);"
    )
    assert signature in a["model.h"]


def test_output_directory_semantics(tmp_path):
    g = state_graph()
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "main.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(CodegenError, match="not generated by refq"):
        generate(g, foreign)
    assert (foreign / "main.c").is_file() and not (foreign / "model.c").exists()
    generate(g, foreign, force=True)
    assert (foreign / MARKER_FILE).is_file() and not (foreign / "main.c").exists()
    generate(g, foreign)  # a refq tree is replaced without force
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CodegenError, match="not a directory"):
        generate(g, a_file, force=True)
    assert a_file.read_text() == "x"


def test_budget_overflow_names_budget_and_excess():
    g = block_graph(SEED, "budget")
    with pytest.raises(
        BudgetError, match=r"'tiny'.*flash: needs [\d,]+ bytes, budget 4,096 bytes, over by"
    ):
        lower_graph(g, "tflm", budget=Budget("tiny", 4096, 1 << 20))
    with pytest.raises(BudgetError, match=r"SRAM: needs [\d,]+ bytes, budget 1,024 bytes"):
        lower_graph(g, "tflm", budget=Budget("tiny", 1 << 20, 1024))
    use = lower_graph(g, "tflm", budget="stm32f446").budget_use
    assert use.budget.name == "stm32f446" and "flash" in use.report()


def _section_sizes(objects) -> dict[str, int]:
    size = require_tool("arm-none-eabi-size")
    out = subprocess.run(
        [size, "-A", *map(str, objects)], capture_output=True, text=True, check=True
    )
    sizes: dict[str, int] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            key = parts[0].split(".")[1] if parts[0].count(".") > 1 else parts[0][1:]
            sizes[key] = sizes.get(key, 0) + int(parts[1])
    return sizes


def _check_estimates(image: Image, config: str) -> None:
    """The lowering's estimates are at least what the compiled model, weights and kernels take
    (sections of their objects: text / rodata / data in flash, arena and state in SRAM)."""
    gen = image.build(config).build_dir / "gen"
    kernels = sorted(gen.glob("refq_*.o"))
    for g in image.models:
        m = g.lowered
        objs = [gen / g.subdir / "model.o", gen / g.subdir / "weights.o"]
        objs += [p for p in kernels if p.stem in {k.name for k in m.kernels}]
        sizes = _section_sizes(objs)
        flash = sum(sizes.get(s, 0) for s in ("text", "rodata", "data"))
        sram = sizes.get("refq_arena", 0) + sizes.get("refq_state", 0) + sizes.get("bss", 0)
        assert flash <= m.flash_estimate, (g.api, sizes, m.flash_estimate)
        assert m.arena_size <= sram <= m.sram_estimate, (g.api, sizes, m.sram_estimate)


ERROR_ENTRY = r"""
#include <stdint.h>
#include "refq_harness.h"
#include "s/model.h"
#include "g/model.h"
static int32_t codes[8];
refq_harness_buffer refq_harness_inputs[] = {{"unused", 0, 0, 0}};
const uint32_t refq_harness_num_inputs = 0;
refq_harness_buffer refq_harness_outputs[] = {{"codes.bin", codes, sizeof codes, 0}};
const uint32_t refq_harness_num_outputs = 1;
int32_t refq_harness_invoke(void)
{
    static int8_t x[64], y[64], gx[12], gy[6];
    int32_t idx[2] = {1, 3};
    codes[0] = refq_s_invoke(x, y);         /* before init: REFQ_ARG_ERROR */
    codes[1] = refq_s_init();
    codes[2] = refq_s_invoke(x, y);
    codes[3] = refq_s_invoke(0, y);         /* NULL input */
    codes[4] = refq_g_invoke(gx, idx, gy);
    idx[1] = 4;                             /* out of [0, 4) */
    codes[5] = refq_g_invoke(gx, idx, gy);
    idx[1] = -1;
    codes[6] = refq_g_invoke(gx, idx, gy);
    refq_s_reset();
    codes[7] = refq_s_invoke(x, y);
    refq_harness_outputs[0].length = sizeof codes;
    return 0;
}
"""


def test_api_error_statuses(tmp_path):
    """invoke before init, NULL pointers and out-of-range indices return REFQ_ARG_ERROR (-1)."""
    require_config("host-ubsan-asan")
    t = {
        "gx": TensorInfo("gx", "int8", (3, 4), scale=0.1, zero_point=0),
        "idx": TensorInfo("idx", "int32", (2,)),
        "gy": TensorInfo("gy", "int8", (3, 2), scale=0.1, zero_point=0),
    }
    gather = Graph(t, [Node("GATHER", ("gx", "idx"), ("gy",), {"axis": 1})], ["gx", "idx"], ["gy"])
    models = [
        render_model(state_graph(), "tflm", api="refq_s", subdir="s"),
        render_model(gather, "tflm", api="refq_g", subdir="g"),
    ]
    files = tree_files(models)
    files["entry.c"] = ERROR_ENTRY
    src = write_tree(tmp_path / "src", files)
    result = run(build(src, "host", sanitize=True), {}, ["codes.bin"])
    codes = np.frombuffer(result.outputs["codes.bin"], "<i4").tolist()
    assert codes == [-1, 0, 0, -1, 0, -1, -1, 0]


def test_codegen_command(tmp_path, capsys):
    require_module("tflite_micro")
    from refq.tflite.writer import write_tflite

    g = block_graph(SEED, "cli")
    g = Graph(
        {k: v for k, v in g.tensors.items() if k in ("h0", "w1", "b1", "a")},
        [g.nodes[1]],
        ["h0"],
        ["a"],
        name="cli",
    )
    model = tmp_path / "m.tflite"
    model.write_bytes(write_tflite(g))
    out = tmp_path / "out"
    assert refq_main(["codegen", str(model), "-o", str(out), "--profile", "cmsis-nn-single"]) == 0
    printed = capsys.readouterr().out
    assert "memory plan: arena" in printed and "stm32h743" in printed
    assert (out / "model.c").is_file() and (out / "refq_fully_connected_s8.c").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert refq_main(["codegen", str(model), "-o", str(foreign)]) == 1
    assert "refusing" in capsys.readouterr().err
    assert (
        refq_main(["codegen", str(model), "-o", str(foreign), "--force", "--budget", "stm32f446"])
        == 0
    )
    assert (
        refq_main(["codegen", str(model), "-o", str(out), "--flash", "100", "--sram", "100"]) == 1
    )
    assert "does not fit budget 'custom'" in capsys.readouterr().err
