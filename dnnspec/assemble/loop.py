"""Many train steps in one runtime call: the train step wrapped in an ONNX `Loop`.

Per-call overhead (binding, the Python-to-runtime crossing, reading the loss) is most of
a small model's step; running K steps per call pays it once. The dataset is a graph
input (bound once, resident on the device) and `order` holds the K batches of sample
indices, so each iteration gathers its own batch: an epoch of full batches can be one
call, and a partial last batch another call of the same graph with a shorter `order`.

The body is the train-step graph itself, nodes and names unchanged: its inputs become
the Loop's carried values (every input `X` with an output `X.next`, whatever kind of
state that is) and `step`, its batch comes from the Gathers, `seed` is read from the
outer scope. The outer graph's own names carry the `in/` and `out/` prefixes, which no
spec name can take, so nothing in the body shadows them. Per-step loss and metric sums
come out as scan outputs `out/loss` [K] (and each named output's `out/loss/<name>`) and
`out/metric.<name>` [K, *statistics shape]. The body is the batch Gathers, the step's
nodes and the step's increment; the loop computes the call's vector of steps,
`hoist/step`, for the passes that then rewrite it (`assemble/passes.py::LOOP_PASSES`:
the dropout key's integer arithmetic runs before the Loop on that vector).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from dnnspec.assemble.hoist import STEPS
from dnnspec.assemble.passes import LOOP_PASSES, LoopPass
from dnnspec.assemble.steps import LOSS, SEED, STEP, next_name
from dnnspec.graph.builder import IR_VERSION, OPSET

IN, OUT = "in/", "out/"
ORDER = IN + "order"
TRIPS = "loop/trips"
ITER, COND, COND_OUT, STEP_NEXT = "loop/iter", "loop/cond", "loop/cond_out", "loop/step_next"


def data_name(name: str) -> str:
    """The outer input holding the whole dataset for the step input `name`."""
    return IN + name


def carried_names(train_step: onnx.ModelProto) -> list[str]:
    """Inputs the train step replaces by an output `<name>.next`, in input order."""
    outputs = {o.name for o in train_step.graph.output}
    return [i.name for i in train_step.graph.input if next_name(i.name) in outputs]


def _dataset_input(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """[N, ...] batch input -> [M, ...] whole-dataset input of the same element type."""
    t = value.type.tensor_type
    dims: list[int | str | None] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
    ]
    return helper.make_tensor_value_info(data_name(value.name), t.elem_type, ["M", *dims[1:]])


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def build_train_loop(
    train_step: onnx.ModelProto, passes: Sequence[LoopPass] = LOOP_PASSES
) -> onnx.ModelProto:
    """The loop graph of a train step: (carried, step, seed, datasets, order [K, B]) ->
    (carried after K steps, per-step loss and metric sums), rewritten by `passes`."""
    g = train_step.graph
    carried = carried_names(train_step)
    inputs = {i.name: i for i in g.input}
    outputs = {o.name: o for o in g.output}
    scalars = [
        o.name for o in g.output if o.name.split("/")[0] == LOSS or o.name.startswith("metric.")
    ]
    batch = [n for n in inputs if n not in carried and n not in (STEP, SEED)]

    gathers = [
        helper.make_node("Gather", [ORDER, ITER], ["loop/index"], name="loop/gather_order", axis=0)
    ]
    for name in batch:
        gathers.append(
            helper.make_node(
                "Gather", [data_name(name), "loop/index"], [name], name=f"loop/gather_{name}"
            )
        )
    step_next = helper.make_node("Add", [STEP, "loop/one"], [STEP_NEXT], name="loop/step_add")
    cond = helper.make_node("Identity", [COND], [COND_OUT], name="loop/cond_identity")
    one = helper.make_tensor("loop/one", TensorProto.INT64, [], [1])
    body = helper.make_graph(
        [*gathers, *g.node, step_next, cond],
        "train_loop_body",
        [
            helper.make_tensor_value_info(ITER, TensorProto.INT64, []),
            helper.make_tensor_value_info(COND, TensorProto.BOOL, []),
            inputs[STEP],
            *(inputs[n] for n in carried),
        ],
        [
            helper.make_tensor_value_info(COND_OUT, TensorProto.BOOL, []),
            helper.make_tensor_value_info(STEP_NEXT, TensorProto.INT64, []),
            *(outputs[next_name(n)] for n in carried),
            *(outputs[n] for n in scalars),
        ],
        initializer=[*g.initializer, one],
    )

    def outer(prefix: str, value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(value)
        copy.name = prefix + name
        return copy

    trips = [
        helper.make_node("Shape", [ORDER], ["loop/order_shape"], name="loop/shape", end=1),
        helper.make_node("Squeeze", ["loop/order_shape"], [TRIPS], name="loop/trips"),
        helper.make_node("Add", [IN + STEP, TRIPS], ["loop/last_step"], name="loop/last_step"),
        helper.make_node(
            "Range", [IN + STEP, "loop/last_step", "loop/step_delta"], [STEPS], name="loop/steps"
        ),
    ]
    loop = helper.make_node(
        "Loop",
        [TRIPS, "", IN + STEP, *(IN + n for n in carried)],
        [OUT + STEP, *(OUT + n for n in carried), *(OUT + n for n in scalars)],
        name="loop",
        body=body,
    )
    float_elem = outputs[LOSS].type.tensor_type.elem_type
    graph = helper.make_graph(
        [*trips, loop],
        "train_loop",
        [
            *(outer(IN, inputs[n], n) for n in carried),
            outer(IN, inputs[STEP], STEP),
            inputs[SEED],
            *(_dataset_input(inputs[n]) for n in batch),
            helper.make_tensor_value_info(ORDER, TensorProto.INT64, ["K", "B"]),
        ],
        [
            *(outer(OUT, inputs[n], n) for n in carried),
            *(
                helper.make_tensor_value_info(OUT + n, float_elem, ["K", *_dims(outputs[n])])
                for n in scalars
            ),
        ],
        initializer=[helper.make_tensor("loop/step_delta", TensorProto.INT64, [], [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="dnnspec",
        doc_string="dnnspec training loop: K train steps over batches gathered from the data",
    )
    for loop_pass in passes:
        loop_pass.run(model)
    return model
